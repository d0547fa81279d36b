"""The simulator's knobs: one frozen dataclass, validated on every change.

The same table of knobs feeds the CLI flags, the ``/_sim/config`` control endpoint and the
management command, so a knob added here exists everywhere at once. A change is applied as a
whole or not at all: ``SimulatorConfig.updated`` validates every value and the combined fault
rates before it builds the new config, and raises ``ConfigError`` with a message fit for a
400 response otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Fault kinds, in the fixed order in which a request's fault is drawn (see faults.py).
FAULT_RATE_FIELDS: tuple[str, ...] = (
    "rate_limit_rate",
    "server_error_rate",
    "hang_rate",
    "malformed_json_rate",
    "unknown_tool_rate",
    "refusal_rate",
    "schema_invalid_rate",
)
LATENCY_DISTRIBUTIONS: tuple[str, ...] = ("fixed", "uniform", "lognormal")
# Pseudo-knob: a total fault rate spread evenly over every fault kind.
FAULTS_SHORTHAND = "faults"


class ConfigError(ValueError):
    """A knob value was rejected; the message says which knob and why."""


@dataclass(frozen=True)
class SimulatorConfig:
    """Every runtime knob of the simulator, with its default.

    Rates are probabilities per request; times are milliseconds unless the name says ``_s``.
    """

    seed: int = 0
    mistake_rate: float = 0.1
    judge_noise_rate: float = 0.0
    false_claim_rate: float = 0.0
    parallel_tool_calls: bool = False
    latency_ms: float = 0.0
    latency_distribution: str = "fixed"
    latency_jitter_ms: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_s: float = 1.0
    server_error_rate: float = 0.0
    hang_rate: float = 0.0
    hang_s: float = 120.0
    malformed_json_rate: float = 0.0
    unknown_tool_rate: float = 0.0
    refusal_rate: float = 0.0
    schema_invalid_rate: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The config as JSON-ready data, as ``GET /_sim/config`` shows it."""
        return dataclasses.asdict(self)

    def total_fault_rate(self) -> float:
        """Probability that a request gets any fault at all."""
        return sum(getattr(self, name) for name in FAULT_RATE_FIELDS)

    def updated(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """Return a copy with ``changes`` applied, or raise ConfigError and change nothing.

        ``faults`` (a total rate) is spread evenly over the fault kinds first, so that an
        explicit rate in the same update overrides its share.
        """
        values = self.as_dict()
        changes = dict(changes)
        if FAULTS_SHORTHAND in changes:
            total = _check_number(FAULTS_SHORTHAND, changes.pop(FAULTS_SHORTHAND), 0.0, 1.0)
            values.update({name: total / len(FAULT_RATE_FIELDS) for name in FAULT_RATE_FIELDS})
        for name, value in changes.items():
            if name not in KNOBS:
                known = ", ".join(sorted([*KNOBS, FAULTS_SHORTHAND]))
                raise ConfigError(f"unknown knob {name!r}; known knobs: {known}")
            values[name] = KNOBS[name].check(name, value)
        config = SimulatorConfig(**values)
        if config.total_fault_rate() > 1.0 + 1e-9:
            raise ConfigError(
                f"fault rates add up to {config.total_fault_rate():.3f}; they must not exceed 1"
            )
        return config


@dataclass(frozen=True)
class Knob:
    """How one knob is validated and described on the command line."""

    kind: type
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def check(self, name: str, value: Any) -> Any:
        """Return ``value`` coerced to the knob's type, or raise ConfigError."""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, got {value!r}")
            return value
        if self.kind is str:
            if value not in self.choices:
                raise ConfigError(f"{name} must be one of {', '.join(self.choices)}; got {value!r}")
            return value
        number = _check_number(name, value, self.low, self.high)
        if self.kind is int:
            if number != int(number):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
            return int(number)
        return float(number)


def _check_number(name: str, value: Any, low: float | None, high: float | None) -> float:
    # bool is an int subclass: true/false must not pass for 1/0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{name} must be >= {low:g}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high:g}, got {value!r}")
    return float(value)


def _rate(what: str) -> Knob:
    return Knob(float, f"probability per request of {what} (0..1)", 0.0, 1.0)


KNOBS: dict[str, Knob] = {
    "seed": Knob(int, "global seed mixed into every decision", -(2**63), 2**63 - 1),
    "mistake_rate": _rate("a plausible wrong action by the agent"),
    "judge_noise_rate": _rate("the judge flipping one rubric criterion (per criterion)"),
    "false_claim_rate": _rate("a final answer that claims a full refund nobody made"),
    "parallel_tool_calls": Knob(bool, "emit independent lookups as parallel tool calls"),
    "latency_ms": Knob(float, "latency added to each response; the median if not fixed", 0, 6e5),
    "latency_distribution": Knob(str, "shape of the latency", choices=LATENCY_DISTRIBUTIONS),
    "latency_jitter_ms": Knob(float, "spread of the latency (uniform +-, lognormal ~1 sd)", 0, 6e5),
    "rate_limit_rate": _rate("a 429 rate-limit error"),
    "retry_after_s": Knob(float, "Retry-After sent with a 429, in seconds", 0, 3600),
    "server_error_rate": _rate("a 500/502/503 error"),
    "hang_rate": _rate("hanging for hang_s then closing without a response"),
    "hang_s": Knob(float, "how long a hanging request hangs, in seconds", 0, 3600),
    "malformed_json_rate": _rate("tool-call arguments that are not valid JSON"),
    "unknown_tool_rate": _rate("a call to a tool that is not in the request"),
    "refusal_rate": _rate("a refusal instead of an answer"),
    "schema_invalid_rate": _rate("valid JSON arguments that violate the tool's schema"),
}
