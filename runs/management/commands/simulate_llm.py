"""``manage.py simulate_llm``: the model simulator, started the Django way.

A thin wrapper over ``runs.simulator``; the server itself needs no Django, and takes the
same flags as ``python -m runs.simulator``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.simulator.cli import add_arguments, config_from_options
from runs.simulator.config import ConfigError
from runs.simulator.server import serve


class Command(BaseCommand):
    help = "Run the deterministic OpenAI-compatible model simulator (see docs/simulator.md)."
    # The simulator touches neither models nor the database: start even before migrate.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 <= options["port"] <= 65535:
            raise CommandError("--port must be between 0 and 65535")
        try:
            config = config_from_options(options)
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        serve(
            config,
            host=options["host"],
            port=options["port"],
            log_requests=options["log_requests"],
        )
