"""What the policy sees of a call beyond its arguments: the run's subject, facts and sums.

A model picks the ids a call touches and splits amounts at will, so a verdict on one call
alone can be gamed: a reply to a stranger's ticket, two refunds of 60.00 under a rule at
100.00. Before every verdict (and on every reviewer's edit) the runtime asks the agent for
the call's facts (``Agent.policy_facts``: the records it reaches and their owners, the
money it moves) and adds up what other calls moved, so rules judge the whole:

- ``sums.run``: the money moved by the run's other calls;
- ``sums.subject``: by every call for the same subject (customer) within the policy's
  window, this run's included;
- ``sums.record``: by every call on the same record (order) within the window.

Each is split by where a call stands: ``executed`` (ran, or may have: executing, or
failed by a timeout or a crash), ``approved`` (a person approved it, not run yet),
``pending`` (permitted and about to run, or waiting for a person); ``total`` is their
sum. Blocked, rejected and refused calls count nothing.

A call that moves money records its exposure on its action (subject, record, amount) in
the transaction that decides its verdict, under a lock on its subject, so two runs of one
customer deciding at the same moment see each other's calls, never neither.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Count, Q, Sum
from django.utils import timezone

from agents.definition import Agent, CallFacts
from policy.engine import Evidence, Policy, empty_sums
from runs.models import GRANTED_OUTCOMES, Action, ActionStatus, Verdict

log = logging.getLogger(__name__)

# A call that failed this way may have had its effect before it failed.
MAYBE_HAPPENED = ("tool_timeout", "tool_crashed")
# A call sent to review and approved (the outcome its decision wrote onto it), not run yet;
# one still waiting for its decision has no outcome.
_APPROVED = Q(review_outcome__in=sorted(GRANTED_OUTCOMES))
_UNDECIDED = Q(review_outcome="")


@dataclass(frozen=True)
class Exposure:
    """A call's evidence for the policy, and what its action records of it."""

    evidence: Evidence
    record: str = ""
    amount: Decimal | None = None

    @property
    def moves_money(self) -> bool:
        return self.amount is not None and bool(self.evidence.subject)

    def action_fields(self) -> dict[str, Any]:
        """The fields of the action that carry its exposure (empty: it moves no money)."""
        if not self.moves_money:
            return {"subject": "", "record": "", "amount": None}
        return {"subject": self.evidence.subject, "record": self.record, "amount": self.amount}


def run_subject(agent: Agent, run_input: Mapping[str, Any]) -> str:
    """The run's subject key, "" when the agent declares none or the input names none."""
    if agent.subject is None:
        return ""
    try:
        return agent.subject(run_input) or ""
    except Exception:  # a broken hook must not open a hole: no subject, facts fail closed
        log.exception("the subject hook of %s failed", agent.name)
        return ""


def call_facts(
    *, agent: Agent, tool_name: str, arguments: Mapping[str, Any], run_input: Mapping[str, Any]
) -> tuple[CallFacts, str]:
    """The agent's facts of one call, and why they could not be looked up ("" if they were).

    A failing lookup fails closed: the policy sends the call to a person, flagged.
    """
    if agent.policy_facts is None:
        return CallFacts(), ""
    try:
        facts = agent.policy_facts(tool_name, arguments, run_input)
    except Exception as exc:
        log.exception("the facts of %s could not be looked up", tool_name)
        return CallFacts(), f"{type(exc).__name__}"
    if facts.amount is not None and not facts.amount.is_finite():
        return CallFacts(), "the amount is not a finite number"
    return facts, ""


def exposure_facts(
    *, agent: Agent, tool_name: str, arguments: Mapping[str, Any], run_input: Mapping[str, Any]
) -> Exposure:
    """A call's facts and the subject it is judged against; its sums are not added yet."""
    subject = run_subject(agent, run_input)
    facts, trouble = call_facts(
        agent=agent, tool_name=tool_name, arguments=arguments, run_input=run_input
    )
    foreign = tuple(
        str(touch)
        for touch in facts.touches
        if touch.owner is not None and (not subject or touch.owner != subject)
    )
    evidence = Evidence(
        subject=subject,
        amount=float(facts.amount) if facts.amount is not None else 0.0,
        foreign=foreign,
        facts=facts.facts,
        trouble=trouble,
    )
    record = facts.touches[0].key if facts.touches else ""
    return Exposure(evidence=evidence, record=record, amount=facts.amount)


def exposure_summed(
    exposure: Exposure, *, policy: Policy, run_id: Any, exclude_action: int | None
) -> Exposure:
    """The exposure with the sums around it (a call that moves no money has none to add).

    ``exclude_action``: the call itself (a redo, an edit). Inside ``subject_locked`` when
    the verdict is then recorded, so no other call of the subject slips in between.
    """
    if exposure.amount is None:
        return exposure
    sums = exposure_sums(
        run_id=run_id,
        subject=exposure.evidence.subject,
        record=exposure.record,
        since=timezone.now() - timedelta(hours=policy.sums_window_hours),
        exclude_action=exclude_action,
    )
    return replace(exposure, evidence=replace(exposure.evidence, sums=sums))


def exposure_sums(
    *, run_id: Any, subject: str, record: str, since: Any, exclude_action: int | None
) -> dict[str, dict[str, float]]:
    """The money moved by other calls, per scope and standing: one query."""
    executed = Q(status__in=[ActionStatus.EXECUTING, ActionStatus.SUCCEEDED]) | Q(
        status=ActionStatus.FAILED, error_class__in=MAYBE_HAPPENED
    )
    proposed = Q(status=ActionStatus.PROPOSED)
    approved = proposed & Q(verdict=Verdict.REVIEW) & _APPROVED
    pending = proposed & (Q(verdict=Verdict.EXECUTE) | (Q(verdict=Verdict.REVIEW) & _UNDECIDED))
    standings = {"executed": executed, "approved": approved, "pending": pending}
    scopes = {"run": Q(run_id=run_id)}
    recent = Q(created_at__gte=since)
    if subject:
        scopes["subject"] = Q(subject=subject) & recent
    if record and subject:
        scopes["record"] = Q(record=record) & recent
    where = Q()
    for condition in scopes.values():
        where |= condition
    rows = Action.objects.filter(where, amount__isnull=False)
    if exclude_action is not None:
        rows = rows.exclude(pk=exclude_action)
    aggregates: dict[str, Any] = {}
    for scope, in_scope in scopes.items():
        for standing, counted in standings.items():
            aggregates[f"{scope}__{standing}"] = Sum("amount", filter=in_scope & counted)
        aggregates[f"{scope}__count"] = Count(
            "pk", filter=in_scope & (executed | approved | pending)
        )
    totals = rows.aggregate(**aggregates)
    sums = empty_sums()
    for scope in scopes:
        row = sums[scope]
        for standing in (*standings, "count"):
            row[standing] = float(totals[f"{scope}__{standing}"] or 0)
        row["total"] = round(row["executed"] + row["approved"] + row["pending"], 2)
    return sums


def subject_locked(subject: str) -> None:
    """Serialise, to commit, the verdicts of calls on one subject (inside a transaction).

    PostgreSQL: a transaction-level advisory lock on the subject's hash. SQLite (the
    embedded mode) serialises every writing transaction already.
    """
    if connection.vendor != "postgresql" or not subject:
        return
    key = int.from_bytes(hashlib.sha256(subject.encode()).digest()[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
