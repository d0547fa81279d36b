"""The policy: which proposed tool calls run, which wait for a person, which are refused.

Deterministic code outside the model. A verdict depends only on the agent's policy, the
tool's declaration, the validated arguments, the model's numeric confidence field, the
run's submitted input and the evidence the runtime looked up for the call (``Evidence``:
the run's subject, the records the call reaches and their owners, the money it moves and
the sums already moved); never on text the model, a ticket or a tool result wrote. Order:

1. Scope: a tool outside the policy's scope is blocked (the model is told why).
2. Subject: a call that reaches records of another subject than the run's (another
   customer's order or ticket) is blocked, or with ``on_foreign_subject="review"`` sent
   to review flagged ``foreign_subject``, whatever its confidence.
3. Review: the call waits for a person when any of these holds, and the strictest wins
   (the most approvers; the first reason found names the queue):
   - a review rule's CEL expression matches the call (``amount + sums.record.total > 100``);
   - the tool's risk class is one the policy always reviews (irreversible by default);
   - the stated confidence is below the tool's threshold (a missing confidence is 0);
   - the evidence could not be looked up (flagged ``facts_unavailable``).
4. Otherwise the call executes.

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
from django.core.serializers.json import DjangoJSONEncoder

from agents.risk import Risk

DEFAULT_QUEUE = "default"
FOREIGN_BLOCK = "block"
FOREIGN_REVIEW = "review"
FOREIGN_CHOICES = (FOREIGN_BLOCK, FOREIGN_REVIEW)
DEFAULT_SUMS_WINDOW_HOURS = 720
SUMS_WINDOW_MAX_HOURS = 24 * 366 * 5
# Flags a verdict carries to the reviewer: why this request is not a routine one.
FLAG_FOREIGN = "foreign_subject"
FLAG_FACTS_UNAVAILABLE = "facts_unavailable"
SUM_SCOPES = ("run", "subject", "record")
SUM_KINDS = ("executed", "approved", "pending", "total", "count")


class PolicyInvalid(ValueError):
    """A policy that cannot be used: a rule that does not parse, a threshold out of range."""


@dataclass(frozen=True)
class ReviewRule:
    """Send matching calls to review.

    ``when`` is a CEL expression over ``args`` (the validated arguments), ``input`` (the
    run's input), ``tool`` (its name), ``risk``, ``confidence`` (0..1, 0 when absent),
    ``run`` (``steps``, ``tool_calls``, ``cost_usd`` so far), and the evidence: ``subject``
    (the run's subject key, "" when none), ``amount`` (the money this call moves, 0 when
    none), ``facts`` (the agent's facts of the call) and ``sums`` (``run``, ``subject`` and
    ``record``, each with ``executed``, ``approved``, ``pending``, ``total`` and ``count``
    of the money other calls moved: in this run, for this subject within the policy's
    window, on the record this call acts on within the window). ``tools`` limits the rule
    to those tools (empty: every tool). ``approvals`` > 1 makes it a two-person rule.
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
    # A call reaching another subject's records: "block" it, or "review" it flagged.
    on_foreign_subject: str = FOREIGN_BLOCK
    # How far back sums over a subject and a record reach, in hours (30 days).
    sums_window_hours: int = DEFAULT_SUMS_WINDOW_HOURS

    def __post_init__(self) -> None:
        if self.on_foreign_subject not in FOREIGN_CHOICES:
            raise PolicyInvalid(
                f"on_foreign_subject must be one of {list(FOREIGN_CHOICES)}, "
                f"not {self.on_foreign_subject!r}"
            )
        if (
            isinstance(self.sums_window_hours, bool)
            or not isinstance(self.sums_window_hours, int)
            or not 1 <= self.sums_window_hours <= SUMS_WINDOW_MAX_HOURS
        ):
            raise PolicyInvalid(
                f"sums_window_hours must be a whole number of hours from 1 to "
                f"{SUMS_WINDOW_MAX_HOURS}, not {self.sums_window_hours!r}"
            )
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
                # Only when not the default: a policy stored before these existed keeps
                # the version (the hash) it always had.
                **(
                    {"on_foreign_subject": self.on_foreign_subject}
                    if self.on_foreign_subject != FOREIGN_BLOCK
                    else {}
                ),
                **(
                    {"sums_window_hours": self.sums_window_hours}
                    if self.sums_window_hours != DEFAULT_SUMS_WINDOW_HOURS
                    else {}
                ),
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
    flags: tuple[str, ...] = ()  # FLAG_FOREIGN, FLAG_FACTS_UNAVAILABLE


def empty_sums() -> dict[str, dict[str, float]]:
    return {scope: dict.fromkeys(SUM_KINDS, 0.0) for scope in SUM_SCOPES}


@dataclass(frozen=True)
class Evidence:
    """What the runtime looked up about a call before its verdict: data, not the model's word.

    ``foreign``: the records the call reaches that belong to another subject ("order
    SO-0042"); ``trouble``: why the facts could not be looked up (the policy then fails
    closed, to a person). ``sums``: per scope (``SUM_SCOPES``) the money other calls moved
    (``SUM_KINDS``), floats as CEL compares them.
    """

    subject: str = ""
    amount: float = 0.0
    foreign: tuple[str, ...] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)
    sums: Mapping[str, Mapping[str, float]] = field(default_factory=empty_sums)
    trouble: str = ""

    def as_json(self) -> dict[str, Any]:
        """As stored on a request's context and shown to the reviewer."""
        return {
            "subject": self.subject,
            "amount": self.amount,
            "foreign": list(self.foreign),
            # Money as the decimal strings the data holds ("129.00"), not as CEL's floats.
            "facts": json.loads(json.dumps(self.facts, cls=DjangoJSONEncoder)),
            "sums": {scope: dict(kinds) for scope, kinds in self.sums.items()},
            **({"trouble": self.trouble} if self.trouble else {}),
        }


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
    evidence: Evidence | None = None,
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
    evidence = evidence or Evidence()
    reasons: list[tuple[str, str, str | None, int, float | None]] = []
    flags: list[str] = []
    if evidence.foreign:
        reached = ", ".join(evidence.foreign)
        if policy.on_foreign_subject == FOREIGN_BLOCK:
            return Decision(
                Verdict.BLOCK,
                f"{tool_name} reaches records that are not this run's subject's ({reached})",
                rule=FLAG_FOREIGN,
                policy_version=version,
                flags=(FLAG_FOREIGN,),
            )
        flags.append(FLAG_FOREIGN)
        reasons.append(
            (f"reaches another subject's records ({reached})", FLAG_FOREIGN, None, 1, None)
        )
    if evidence.trouble:
        flags.append(FLAG_FACTS_UNAVAILABLE)
        reasons.append(
            (
                f"its facts could not be looked up ({evidence.trouble})",
                FLAG_FACTS_UNAVAILABLE,
                None,
                1,
                None,
            )
        )
    stated = confidence if confidence is not None and 0 <= confidence <= 1 else 0.0
    activation = {
        "args": celpy.json_to_cel(_plain(arguments)),
        "input": celpy.json_to_cel(_plain(run_input)),
        "tool": celtypes.StringType(tool_name),
        "risk": celtypes.StringType(str(risk)),
        "confidence": celtypes.DoubleType(stated),
        "run": celpy.json_to_cel(_plain(run_facts or {})),
        "subject": celtypes.StringType(evidence.subject),
        "amount": celtypes.DoubleType(float(evidence.amount)),
        "facts": celpy.json_to_cel(_plain(evidence.facts)),
        "sums": celpy.json_to_cel(_plain(evidence.sums)),
    }
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
        flags=tuple(flags),
    )
