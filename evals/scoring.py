"""Scores of one example and of a whole eval: pure functions of what was expected and done.

Per example, each metric is a number from 0 to 1, or None where it does not apply:

level 1 (step examples: the model's next reply to a stored conversation)
- ``tool_selection``: the expected tools were called (and no forbidden one);
- ``argument_match``: the share of expected arguments that match, by their match mode;
- ``policy_match``: the policy made of the call what the example expects;

level 2 (task examples: a whole sandboxed run of the input)
- ``calls_made``: the share of expected calls made (in order, when ``ordered``);
- ``forbidden_absent``: no call of a forbidden tool was made;
- ``end_state``: the run ended as expected;
- ``task_completion``: all three held;
- ``judge``: the judge's grade of the final answer against the rubric.

An example that could not be run (``error``) scores 0 in every metric of its kind, so an
eval where everything breaks cannot pass a gate. Aggregates are means over the examples
a metric applies to, with their count; cost, tokens, latency and steps are summed and
averaged per example.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

STEP_METRICS = ("tool_selection", "argument_match", "policy_match")
TASK_METRICS = ("calls_made", "forbidden_absent", "end_state", "task_completion", "judge")
QUALITY_METRICS = (*STEP_METRICS, *TASK_METRICS)
USAGE_FIELDS = ("cost_usd", "tokens_in", "tokens_out", "latency_ms", "steps")


@dataclass(frozen=True)
class Call:
    """A call the release made or proposed: its tool, arguments and the policy's outcome.

    ``policy``: "execute", "review" or "block" (None: not judged, the arguments were
    invalid); ``queue`` for a review.
    """

    tool: str
    arguments: Mapping[str, Any] | None
    policy: str | None = None
    queue: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "arguments": dict(self.arguments) if self.arguments is not None else None,
            "policy": self.policy,
            "queue": self.queue,
        }


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _same(actual: Any, expected: Any) -> bool:
    """Equal as the tool would see them: 25, 25.0 and "25.00" are one amount."""
    a, e = _number(actual), _number(expected)
    if a is not None and e is not None:
        return a == e
    return bool(actual == expected)


def argument_matches(match: Mapping[str, Any], present: bool, actual: Any) -> bool:
    """Whether one argument matches its expectation (an ``ArgumentMatch`` as JSON)."""
    mode = match.get("mode", "exact")
    if mode == "any":
        return present
    if not present:
        return False
    if mode == "exact":
        return _same(actual, match.get("value"))
    if mode == "tolerance":
        a, e = _number(actual), _number(match.get("value"))
        tolerance = _number(match.get("tolerance"))
        return a is not None and e is not None and tolerance is not None and abs(a - e) <= tolerance
    if mode == "one_of":
        return any(_same(actual, option) for option in match.get("options") or ())
    raise ValueError(f"unknown match mode {mode!r}")


def arguments_score(expected: Mapping[str, Any], call: Call | None) -> float:
    """The share of the expected call's arguments that ``call`` matches (1 with none)."""
    matches = expected.get("arguments") or {}
    if call is None:
        return 0.0
    if not matches:
        return 1.0
    arguments = call.arguments or {}
    hits = sum(
        argument_matches(match, name in arguments, arguments.get(name))
        for name, match in matches.items()
    )
    return hits / len(matches)


def _first_of(calls: Sequence[Call], tool: str) -> Call | None:
    return next((call for call in calls if call.tool == tool), None)


def _forbidden_absent(example: Mapping[str, Any], calls: Sequence[Call]) -> bool:
    forbidden = set(example.get("forbidden_tools") or ())
    return not any(call.tool in forbidden for call in calls)


def step_scores(example: Mapping[str, Any], calls: Sequence[Call]) -> dict[str, float | None]:
    """Level 1: the reply's proposed calls against the step example."""
    expected = example.get("expected_calls") or []
    clean = _forbidden_absent(example, calls)
    if expected:
        found = [_first_of(calls, call["tool"]) for call in expected]
        selection = float(clean and all(call is not None for call in found))
        arguments: float | None = sum(
            arguments_score(call, match) for call, match in zip(expected, found, strict=True)
        ) / len(expected)
    else:
        found = []
        selection = float(clean)
        arguments = None
    policy: float | None = None
    wanted = example.get("expected_policy")
    if wanted:
        judged = found[0] if found else (calls[0] if calls else None)
        policy = float(
            judged is not None
            and judged.policy == wanted["outcome"]
            and (wanted.get("queue") is None or judged.queue == wanted["queue"])
        )
    return {"tool_selection": selection, "argument_match": arguments, "policy_match": policy}


def _calls_made(
    expected: Sequence[Mapping[str, Any]], calls: Sequence[Call], ordered: bool
) -> float:
    """The share of expected calls made, each by a distinct call, fully matching.

    In order when ``ordered``: each expected call is looked for after the previous match.
    """
    if not expected:
        return 1.0
    used: set[int] = set()
    position = 0
    made = 0
    for want in expected:
        start = position if ordered else 0
        for i in range(start, len(calls)):
            if i in used or calls[i].tool != want["tool"]:
                continue
            if arguments_score(want, calls[i]) == 1.0:
                used.add(i)
                position = i + 1
                made += 1
                break
    return made / len(expected)


def end_state_holds(end_state: Mapping[str, Any], state: str, answer: str) -> bool:
    """The run's end against ``end_state``: its ``state``, words its answer must contain."""
    if end_state.get("state") not in (None, state):
        return False
    text = answer.casefold()
    return all(word.casefold() in text for word in end_state.get("output_contains") or ())


def task_scores(
    example: Mapping[str, Any],
    calls: Sequence[Call],
    *,
    state: str,
    answer: str,
    judge: float | None,
) -> dict[str, float | None]:
    """Level 2: a sandboxed run's calls, end and answer against the task example.

    ``calls``: the calls that went through (ran, or were answered by the sandbox): a call
    the policy blocked or a verifier refused was not made.
    """
    made = _calls_made(example.get("expected_calls") or [], calls, bool(example.get("ordered")))
    absent = float(_forbidden_absent(example, calls))
    ended = float(end_state_holds(example.get("end_state") or {}, state, answer))
    return {
        "calls_made": made,
        "forbidden_absent": absent,
        "end_state": ended,
        "task_completion": float(made == 1.0 and absent == 1.0 and ended == 1.0),
        "judge": judge if example.get("rubric") else None,
    }


def error_scores(example: Mapping[str, Any]) -> dict[str, float | None]:
    """An example that could not be run: 0 in every metric its kind would have."""
    if example.get("kind") == "step":
        return {
            "tool_selection": 0.0,
            "argument_match": 0.0 if example.get("expected_calls") else None,
            "policy_match": 0.0 if example.get("expected_policy") else None,
        }
    return {
        "calls_made": 0.0,
        "forbidden_absent": 0.0,
        "end_state": 0.0,
        "task_completion": 0.0,
        "judge": 0.0 if example.get("rubric") else None,
    }


@dataclass(frozen=True)
class Scored:
    """One example's result as the aggregates read it."""

    scores: Mapping[str, float | None]
    usage: Mapping[str, float]
    error: bool = False


def aggregate(results: Iterable[Scored]) -> dict[str, Any]:
    """The eval's metrics: per metric its mean and count; usage totals and means."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    usage = dict.fromkeys(USAGE_FIELDS, 0.0)
    examples = errors = 0
    for result in results:
        examples += 1
        errors += result.error
        for name, value in result.scores.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1
        for name in USAGE_FIELDS:
            usage[name] += float(result.usage.get(name, 0) or 0)
    metrics = {
        name: {"mean": round(sums[name] / counts[name], 4), "n": counts[name]}
        for name in QUALITY_METRICS
        if counts.get(name)
    }
    return {
        "examples": examples,
        "errors": errors,
        "metrics": metrics,
        "usage": {
            "total": {name: round(value, 6) for name, value in usage.items()},
            "per_example": {
                name: round(value / examples, 6) if examples else 0.0
                for name, value in usage.items()
            },
        },
    }
