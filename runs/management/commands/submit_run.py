"""Submit a run from the command line and print its id."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs import services
from runs.models import Run


class Command(BaseCommand):
    help = "Submit a run of an agent on a JSON input and print the run id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", required=True, help="the agent's registered name")
        parser.add_argument("--input", required=True, help="the input, as a JSON object")
        parser.add_argument(
            "--wait",
            type=float,
            default=0,
            metavar="SECONDS",
            help="wait up to this long for the run to finish and print its final state",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            run_input = json.loads(options["input"])
        except ValueError as exc:
            raise CommandError(f"--input is not valid JSON: {exc}") from None
        try:
            run, _ = services.run_submit(agent_name=options["agent"], run_input=run_input)
        except services.RunInputInvalid as exc:
            details = f"\n{json.dumps(exc.details, indent=2)}" if exc.details else ""
            raise CommandError(f"{exc.message}{details}") from None
        self.stdout.write(str(run.id))
        if options["wait"] > 0:
            self._wait(run, options["wait"])

    def _wait(self, run: Run, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if not run.is_active:  # ended, or parked for a person
                self.stdout.write(
                    json.dumps({"state": run.state, "steps": run.next_seq, "error": run.error})
                )
                return
            time.sleep(0.2)
        raise CommandError(f"run {run.id} is still {run.state} after {timeout_s} s")
