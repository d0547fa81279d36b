"""List API tokens, or revoke one: ``api_tokens list [--user NAME]``, ``api_tokens revoke ID``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from agentdesk.models import ApiToken
from agentdesk.tokens import TokenRefused, api_token_revoke


class Command(BaseCommand):
    help = "List API tokens (never their keys), or revoke one by its id; revoking is audited."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help="every token, newest first")
        listing.add_argument("--user", help="only this user's tokens")
        revoke = actions.add_parser("revoke", help="revoke a token at once")
        revoke.add_argument("token_id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "revoke":
            try:
                token = api_token_revoke(token_id=options["token_id"], actor=None, owner=None)
            except ApiToken.DoesNotExist:
                raise CommandError(f"no API token {options['token_id']}") from None
            except TokenRefused as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"revoked {token.pk} {token.prefix}… of {token.user.get_username()}")
            return
        tokens = ApiToken.objects.select_related("user").order_by("-id")
        if options["user"]:
            tokens = tokens.filter(user__username=options["user"])
        now = timezone.now()
        never = "never"
        for token in tokens:
            expires = token.expires_at.isoformat() if token.expires_at else never
            used = token.last_used_at.isoformat() if token.last_used_at else never
            fields = [str(token.pk), f"{token.prefix}…", token.user.get_username(), token.name]
            fields += [token.status(now), f"expires {expires}", f"last used {used}"]
            self.stdout.write("\t".join(fields))
