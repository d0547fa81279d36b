from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from agentdesk.tokens import api_token_create


class Command(BaseCommand):
    help = "Create an API token for a user and print it (it is shown once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")
        parser.add_argument(
            "--expires-in-days",
            type=int,
            default=None,
            help="the token stops working after this many days (default: until revoked)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user named {options['username']!r}")
        days = options["expires_in_days"]
        if days is not None and days < 1:
            raise CommandError("--expires-in-days must be 1 or more")
        expires_at = timezone.now() + timedelta(days=days) if days is not None else None
        _, key = api_token_create(user=user, name=options["name"], expires_at=expires_at)
        self.stdout.write(key)
