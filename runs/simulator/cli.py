"""Command-line flags for the simulator, shared by ``python -m runs.simulator`` and
``manage.py simulate_llm``.

Every knob of ``SimulatorConfig`` becomes a flag (``mistake_rate`` → ``--mistake-rate``)
whose default is "not given", so only the flags actually passed reach
``SimulatorConfig.updated`` and its validation.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from runs.simulator.config import FAULTS_SHORTHAND, KNOBS, ConfigError, SimulatorConfig
from runs.simulator.server import serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --host, --port, --log-requests, --faults and one flag per knob."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8400, help="port; 0 picks a free one")
    parser.add_argument("--log-requests", action="store_true", help="log every request to stderr")
    parser.add_argument(
        f"--{FAULTS_SHORTHAND}",
        type=float,
        default=None,
        metavar="RATE",
        help="total fault rate spread evenly over all fault kinds; explicit rates override",
    )
    defaults = SimulatorConfig()
    for name, knob in KNOBS.items():
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        help_text = f"{knob.help} (default {default})"
        if knob.kind is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif knob.kind is str:
            parser.add_argument(flag, dest=name, choices=knob.choices, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=knob.kind, default=None, help=help_text)


def config_from_options(options: Mapping[str, Any]) -> SimulatorConfig:
    """The config for the parsed options; raises ConfigError on a bad value."""
    names = [FAULTS_SHORTHAND, *(f.name for f in dataclasses.fields(SimulatorConfig))]
    changes = {name: options[name] for name in names if options.get(name) is not None}
    return SimulatorConfig().updated(changes)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m runs.simulator",
        description="Deterministic OpenAI-compatible model simulator (docs/simulator.md).",
    )
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    if not 0 <= options["port"] <= 65535:
        parser.error("--port must be between 0 and 65535")
    try:
        config = config_from_options(options)
    except ConfigError as exc:
        parser.error(str(exc))
    serve(config, host=options["host"], port=options["port"], log_requests=options["log_requests"])
    return 0
