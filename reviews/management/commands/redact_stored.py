"""Redact what older versions stored unredacted (reviews.backfill); safe to run again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from reviews.backfill import BATCH, stored_records_redact


class Command(BaseCommand):
    help = (
        "Redact secrets that older versions stored in runs, steps, actions, dead letters, "
        "requests, decisions and golden candidates. Rotate any key it finds all the same."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", type=int, default=BATCH, help="rows per transaction")

    def handle(self, *args: Any, **options: Any) -> None:
        report = stored_records_redact(batch=max(options["batch"], 1))
        for label, count in sorted(report.rewritten.items()):
            self.stdout.write(f"redacted {count} {label} row(s)")
        if not report.rewritten:
            self.stdout.write("nothing to redact")
        if report.skipped_active_runs:
            self.stdout.write(
                f"skipped {report.skipped_active_runs} queued or running run(s): "
                "run this again once they have stopped"
            )
        for label, count in sorted(report.secrets_under_hash.items()):
            self.stdout.write(
                f"{count} {label} row(s) hold a secret in arguments an approval hash covers; "
                "left as they are: reject or discard them"
            )
