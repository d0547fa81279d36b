"""The policy: which proposed tool calls run, which wait for a person, which are refused.

Deterministic code outside the model. A verdict depends only on the agent's policy, the
tool's declaration, the validated arguments, the model's numeric confidence field and the
run's submitted input; never on text the model, a ticket or a tool result wrote. Order:

1. Scope: a tool outside the policy's scope is blocked (the model is told why).
2. Review: the call waits for a person when any of these holds, and the strictest wins
   (the most approvers; the first reason found names the queue):
   - a review rule's CEL expression matches the call (``args.amount > 100``);
   - the tool's risk class is one the policy always reviews (irreversible by default);
   - the stated confidence is below the tool's threshold (a missing confidence is 0).
3. Otherwise the call executes.

Rules are written in CEL (Common Expression Language, through ``cel-python``), which
cannot call Python, loop forever or touch anything outside the variables it is given. A
rule that fails to evaluate on a call (a missing field, a type mismatch) counts as a
match: a policy fails closed, towards a person.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes

from agentdesk.agents import Risk

DEFAULT_QUEUE = "default"


class PolicyInvalid(ValueError):
    """A policy that cannot be used: a rule that does not parse, a threshold out of range."""


@dataclass(frozen=True)
class ReviewRule:
    """Send matching calls to review.

    ``when`` is a CEL expression over ``args`` (the validated arguments), ``input`` (the
    run's input), ``tool`` (its name), ``risk``, ``confidence`` (0..1, 0 when absent) and
    ``run`` (``steps``, ``tool_calls``, ``cost_usd`` so far). ``tools`` limits the rule to
    those tools (empty: every tool). ``approvals`` > 1 makes it a two-person (N-person) rule.
    """

    name: str
    when: str
    tools: tuple[str, ...] = ()
    queue: str | None = None
    approvals: int = 1
    description: str = ""


@dataclass(frozen=True)
class Policy:
    # The tools the agent may use now; None: every tool it declares.
    scope: frozenset[str] | None = None
    # Calls of these risk classes always wait for a person.
    review_risks: frozenset[Risk] = frozenset({Risk.IRREVERSIBLE})
    # Per tool: the confidence below which a call waits for a person.
    thresholds: Mapping[str, float] = field(default_factory=dict)
    rules: tuple[ReviewRule, ...] = ()
    # Where reviews go: per tool, else the default queue (also the agent's escalation queue).
    queue: str = DEFAULT_QUEUE
    tool_queues: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for tool, threshold in self.thresholds.items():
            if not 0 <= threshold <= 1:
                raise PolicyInvalid(f"threshold of {tool!r} must be between 0 and 1")
        names = [rule.name for rule in self.rules]
        if len(names) != len(set(names)):
            raise PolicyInvalid(f"rule names must be unique: {names}")
        for rule in self.rules:
            if rule.approvals < 1:
                raise PolicyInvalid(f"rule {rule.name!r}: approvals must be at least 1")
            compile_rule(rule.when)  # raises PolicyInvalid

    @property
    def version(self) -> str:
        """A short content hash: two actions with the same version saw the same policy."""
        blob = json.dumps(
            {
                "scope": sorted(self.scope) if self.scope is not None else None,
                "review_risks": sorted(self.review_risks),
                "thresholds": dict(sorted(self.thresholds.items())),
                "rules": [vars(rule) for rule in self.rules],
                "queue": self.queue,
                "tool_queues": dict(sorted(self.tool_queues.items())),
            },
            sort_keys=True,
        )
        return "pol-" + hashlib.sha256(blob.encode()).hexdigest()[:12]

    def validate_for(self, tool_names: set[str]) -> None:
        """Refuse a policy that names tools the agent does not have."""
        named = set(self.thresholds) | set(self.tool_queues) | set(self.scope or ())
        for rule in self.rules:
            named |= set(rule.tools)
        unknown = sorted(named - tool_names)
        if unknown:
            raise PolicyInvalid(f"the policy names tools the agent does not have: {unknown}")


class Verdict(StrEnum):
    EXECUTE = "execute"
    REVIEW = "review"
    BLOCK = "block"


@dataclass(frozen=True)
class Decision:
    """A policy's verdict on one call, with everything a reviewer and an auditor need."""

    verdict: Verdict
    reason: str
    rule: str = ""  # the rule's name, or "scope", "risk", "threshold"
    queue: str = ""
    approvals: int = 1
    threshold: float | None = None
    policy_version: str = ""


@lru_cache(maxsize=512)
def compile_rule(expression: str) -> celpy.Runner:
    """Parse a CEL expression once per process; PolicyInvalid if it does not parse."""
    if not expression.strip():
        raise PolicyInvalid("a rule needs an expression")
    environment = celpy.Environment()
    try:
        return environment.program(environment.compile(expression))
    except celpy.CELParseError as exc:
        raise PolicyInvalid(f"the rule {expression!r} does not parse: {exc}") from None


def _plain(value: Any) -> Any:
    """Arguments as CEL sees them: numbers as numbers (a Decimal amount compares to 100)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return str(value)
    return value


def _rule_matches(rule: ReviewRule, activation: dict[str, Any]) -> tuple[bool, str]:
    try:
        result = compile_rule(rule.when).evaluate(activation)
    except celpy.CELEvalError as exc:  # a missing field, a type mismatch: fail closed
        return True, f"could not be evaluated ({exc.args[0] if exc.args else exc})"
    except Exception as exc:  # anything else cel-python raises fails closed too
        return True, f"could not be evaluated ({type(exc).__name__})"
    if isinstance(result, celpy.CELEvalError):
        return True, f"could not be evaluated ({result.args[0] if result.args else result})"
    if not isinstance(result, celtypes.BoolType):
        return True, f"did not give true or false ({type(result).__name__})"
    return bool(result), ""


def policy_evaluate(
    *,
    policy: Policy,
    tool_name: str,
    risk: Risk,
    arguments: Mapping[str, Any],
    confidence: float | None,
    run_input: Mapping[str, Any],
    run_facts: Mapping[str, Any] | None = None,
) -> Decision:
    """The verdict on one proposed call. Pure: the same inputs give the same verdict."""
    version = policy.version
    if policy.scope is not None and tool_name not in policy.scope:
        return Decision(
            Verdict.BLOCK,
            f"{tool_name} is outside this agent's scope",
            rule="scope",
            policy_version=version,
        )
    stated = confidence if confidence is not None and 0 <= confidence <= 1 else 0.0
    activation = {
        "args": celpy.json_to_cel(_plain(arguments)),
        "input": celpy.json_to_cel(_plain(run_input)),
        "tool": celtypes.StringType(tool_name),
        "risk": celtypes.StringType(str(risk)),
        "confidence": celtypes.DoubleType(stated),
        "run": celpy.json_to_cel(_plain(run_facts or {})),
    }
    reasons: list[tuple[str, str, str | None, int, float | None]] = []
    for rule in policy.rules:
        if rule.tools and tool_name not in rule.tools:
            continue
        matched, trouble = _rule_matches(rule, activation)
        if matched:
            why = f"rule {rule.name}: {rule.when}" + (f" {trouble}" if trouble else "")
            reasons.append((why, rule.name, rule.queue, rule.approvals, None))
    if risk in policy.review_risks:
        reasons.append((f"{tool_name} is {risk}", "risk", None, 1, None))
    threshold = policy.thresholds.get(tool_name)
    if threshold is not None and stated < threshold:
        reasons.append(
            (
                f"confidence {stated:.2f} is below the threshold {threshold:.2f}",
                "threshold",
                None,
                1,
                threshold,
            )
        )
    if not reasons:
        return Decision(Verdict.EXECUTE, "no rule requires review", policy_version=version)
    why, rule_name, queue, _, _ = reasons[0]
    return Decision(
        Verdict.REVIEW,
        "; ".join(reason[0] for reason in reasons),
        rule=rule_name,
        queue=queue or policy.tool_queues.get(tool_name) or policy.queue,
        approvals=max(reason[3] for reason in reasons),
        threshold=threshold,
        policy_version=version,
    )
