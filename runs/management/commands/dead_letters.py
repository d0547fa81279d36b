"""List, inspect, requeue or discard dead-lettered runs from the command line."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs import selectors, services
from runs.models import DeadLetter


class Command(BaseCommand):
    help = "Dead-lettered runs: list, show ID, requeue ID (resume from checkpoint), discard ID."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["list", "show", "requeue", "discard"])
        parser.add_argument("letter_id", nargs="?", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        action, letter_id = options["action"], options["letter_id"]
        if action == "list":
            self._list()
            return
        if letter_id is None:
            raise CommandError(f"'{action}' needs a dead letter id; see 'dead_letters list'")
        letter = selectors.dead_letter_get(letter_id=letter_id)
        if letter is None:
            raise CommandError(f"no dead letter {letter_id}")
        if action == "show":
            self._show(letter)
            return
        resolve = (
            services.dead_letter_requeue if action == "requeue" else services.dead_letter_discard
        )
        try:
            resolve(letter_id=letter_id, actor=None)
        except services.DeadLetterResolved as exc:
            raise CommandError(str(exc)) from None
        done = "requeued" if action == "requeue" else "discarded"
        self.stdout.write(f"dead letter {letter_id} {done} (run {letter.run_id})")

    def _list(self) -> None:
        letters = selectors.dead_letters_open()
        if not letters:
            self.stdout.write("no open dead letters")
        for letter in letters:
            self.stdout.write(
                f"{letter.pk:>6}  {letter.run_id}  step {letter.seq:<3} "
                f"{letter.error.get('class', '?'):<24} {letter.created_at:%Y-%m-%d %H:%M:%S}"
            )

    def _show(self, letter: DeadLetter) -> None:
        run = letter.run
        self.stdout.write(
            json.dumps(
                {
                    "id": letter.pk,
                    "status": letter.status,
                    "run": str(run.id),
                    "agent": run.agent_name,
                    "trace_id": run.trace_id,
                    "seq": letter.seq,
                    "error": letter.error,
                    "input": run.input,
                    "checkpoint": run.checkpoint,
                },
                indent=2,
                default=str,
            )
        )
