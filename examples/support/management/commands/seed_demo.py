from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from agentdesk.roles import DEMO_ACCOUNTS, demo_accounts_create
from examples.support.seed import seed_shop


class Command(BaseCommand):
    help = "Create the role groups, the demo logins and the example shop's data. Idempotent."

    def handle(self, *args: Any, **options: Any) -> None:
        demo_accounts_create()
        seed_shop()
        self.stdout.write("Demo data ready. Logins:")
        for username, password, role in DEMO_ACCOUNTS:
            self.stdout.write(f"  {username:<9} / {password:<14} ({role or 'superuser'})")
