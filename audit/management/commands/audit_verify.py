"""Walk the audit log's hash chain and name the first broken event (exit 1), or exit 0."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from audit.log import ChainBreak, audit_chain_verify


class Command(BaseCommand):
    help = (
        "Recompute every audit event's hash in seq order and check each links to the one "
        "before. Exit 0 when the chain is intact, 1 at the first broken event (named)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", type=int, default=5000, help="events read per query")
        parser.add_argument("--json", action="store_true", help="print one JSON line")

    def handle(self, *args: Any, **options: Any) -> None:
        result = audit_chain_verify(batch=options["batch"])
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
        elif isinstance(result, ChainBreak):
            self.stderr.write(result.message())
        else:
            self.stdout.write(
                f"audit log intact: {result.events} events, last seq {result.last_seq}, "
                f"head hash {result.head_hash}"
            )
        if isinstance(result, ChainBreak):
            raise SystemExit(1)
