"""Fault injection: which fault a request gets, its latency, and how a reply is corrupted.

Faults are drawn from ``random.Random(f"{seed}:{conversation digest}:{attempt}")`` where
*attempt* counts, in server memory, how often this exact conversation state was requested.
Two consequences, both on purpose:

- a retry of the same request is a new draw, so a retry can succeed after a 429 or a 500
  (the brain's decision, seeded without the attempt, stays the same);
- a fresh server replays the same faults for the same sequence of requests of a
  conversation, whatever other conversations do concurrently.

One uniform draw picks at most one fault; the kinds partition [0, total rate) in the order
of ``FAULT_RATE_FIELDS``.
"""

from __future__ import annotations

import json
import math
import random
from enum import StrEnum
from typing import Any

from runs.simulator.config import FAULT_RATE_FIELDS, SimulatorConfig
from runs.simulator.protocol import Reply
from runs.simulator.replies import REFUSAL_TEXT


class Fault(StrEnum):
    """The fault kinds, in the order of ``FAULT_RATE_FIELDS``."""

    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    HANG = "hang"
    MALFORMED_JSON = "malformed_json"
    UNKNOWN_TOOL = "unknown_tool"
    REFUSAL = "refusal"
    SCHEMA_INVALID = "schema_invalid"


# Faults that corrupt a 200 response rather than replace it.
OUTPUT_FAULTS = frozenset(
    {Fault.MALFORMED_JSON, Fault.UNKNOWN_TOOL, Fault.REFUSAL, Fault.SCHEMA_INVALID}
)
# Faults that need a tool call to corrupt; the server forces one if the brain made none.
CALL_FAULTS = OUTPUT_FAULTS - {Fault.REFUSAL}
SERVER_ERRORS: dict[int, tuple[str, str]] = {
    500: ("The server had an error while processing your request.", "server_error"),
    502: ("Bad gateway.", "bad_gateway"),
    503: ("The engine is currently overloaded, please try again later.", "overloaded"),
}
INVENTED_TOOLS = (
    "delete_customer",
    "issue_store_credit",
    "escalate_to_manager",
    "lookup_orders",
    "refund_order",
)


def fault_rng(seed_material: str, attempt: int) -> random.Random:
    """The Random for one attempt's fault and latency draws."""
    return random.Random(f"{seed_material}:{attempt}")


def draw_fault(rng: random.Random, config: SimulatorConfig) -> Fault | None:
    """At most one fault for this request."""
    roll = rng.random()
    edge = 0.0
    for kind, name in zip(Fault, FAULT_RATE_FIELDS, strict=True):
        edge += getattr(config, name)
        if roll < edge:
            return kind
    return None


def draw_latency_s(rng: random.Random, config: SimulatorConfig) -> float:
    """This response's added latency in seconds.

    fixed: ``latency_ms``. uniform: ``latency_ms`` +- ``latency_jitter_ms``. lognormal:
    median ``latency_ms`` and sigma ``ln(1 + jitter/median)``, so about two thirds of the
    values fall within a factor ``1 + jitter/median`` of the median, with a long right tail.
    """
    median, jitter = config.latency_ms, config.latency_jitter_ms
    if config.latency_distribution == "uniform":
        millis = rng.uniform(median - jitter, median + jitter)
    elif config.latency_distribution == "lognormal" and median > 0:
        millis = rng.lognormvariate(math.log(median), math.log1p(jitter / median))
    else:
        millis = median
    return max(0.0, min(millis, 600_000.0)) / 1000


def server_error_status(rng: random.Random) -> int:
    """500, 502 or 503, evenly."""
    return rng.choice(sorted(SERVER_ERRORS))


def corrupt(
    fault: Fault, reply: Reply, schemas: dict[str, dict[str, Any]], rng: random.Random
) -> Reply:
    """Apply an output fault to the reply; the first tool call takes the damage."""
    if fault is Fault.REFUSAL:
        return Reply(content=REFUSAL_TEXT, refusal=REFUSAL_TEXT, calls=[])
    if not reply.calls:
        return reply
    name, arguments = reply.calls[0]
    if fault is Fault.MALFORMED_JSON:
        first = (name, _malformed(arguments, rng))
    elif fault is Fault.UNKNOWN_TOOL:
        first = (rng.choice([t for t in INVENTED_TOOLS if t not in schemas]), arguments)
    elif fault is Fault.SCHEMA_INVALID:
        first = (name, json.dumps(_schema_invalid(json.loads(arguments), schemas.get(name, {}))))
    else:
        return reply
    return Reply(content=reply.content, refusal=reply.refusal, calls=[first, *reply.calls[1:]])


def _malformed(arguments: str, rng: random.Random) -> str:
    # Either cut off mid-way (as when a model hits its token limit) or Python-repr quoting.
    if rng.random() < 0.5:
        return arguments[: max(1, len(arguments) // 2)]
    return repr(json.loads(arguments))


def _schema_invalid(arguments: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Valid JSON that breaks the schema: a nonsense amount, else a missing required field."""
    broken = dict(arguments)
    if "amount" in broken:
        broken["amount"] = "lots"
        return broken
    required = [f for f in schema.get("required") or [] if f in broken]
    required = [f for f in required if f not in ("rationale", "confidence")] or required
    if required:
        del broken[required[0]]
        return broken
    properties = schema.get("properties") or {}
    for key, spec in properties.items():
        if key in broken and isinstance(spec, dict) and spec.get("type") == "string":
            broken[key] = 12345
            return broken
    broken["confidence"] = "very sure"
    return broken
