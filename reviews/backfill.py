"""Redact what older versions stored unredacted, in place, after an upgrade.

Redaction happens where data is written (docs/audit.md), so rows written before a path was
covered keep what they hold: a key an endpoint echoed into a run's error, a card a tool
returned into an action's result. ``stored_records_redact`` rewrites those columns. The key
itself should be rotated all the same: it was shown to everyone who could see the run.

What it does not rewrite, and why:

1. arguments under a hash (an action's, a request's, a decision's): the hash an approval
   covers and the arguments the tool runs must stay one; it counts the rows whose arguments
   still hold a secret, for a person to reject or let expire;
2. runs a worker owns (queued, running): its next commit writes the row as it read it, so a
   rewrite would race it; they are counted, and the command can be run again later;
3. the audit log: append-only, and redacted when each event was written.

Each batch is one transaction that locks its rows and writes one audit event naming what
changed, so two runs of the command, or a reviewer deciding meanwhile, never lose a write.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from django.db import models, transaction

from agentdesk.redaction import redact_value
from audit.log import audit_record
from audit.models import AuditVerb
from reviews.models import ApprovalRequest, Decision, GoldenCandidate
from runs.kernel.stepping import STEP_REDACTED
from runs.models import ACTIVE_STATES, Action, DeadLetter, Run, Step

log = logging.getLogger(__name__)

BATCH = 500


@dataclass(frozen=True)
class _Target:
    model: type[models.Model]
    columns: tuple[str, ...]  # rewritten
    hashed: tuple[str, ...] = ()  # never rewritten; rows holding a secret are counted


def _text_columns(model: type[models.Model], *, but: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(
        field.name
        for field in model._meta.concrete_fields
        if isinstance(field, models.TextField | models.JSONField) and field.name not in but
    )


TARGETS = (
    _Target(Run, ("input", "output", "error", "checkpoint")),
    _Target(Step, STEP_REDACTED),
    _Target(Action, ("rationale", "result", "verdict_reason"), ("arguments", "raw_arguments")),
    _Target(DeadLetter, _text_columns(DeadLetter)),
    _Target(ApprovalRequest, _text_columns(ApprovalRequest, but=("arguments",)), ("arguments",)),
    _Target(Decision, ("reason",), ("arguments",)),
    _Target(GoldenCandidate, _text_columns(GoldenCandidate)),
)


@dataclass
class BackfillReport:
    rewritten: Counter[str]  # rows changed, by model label
    skipped_active_runs: int
    secrets_under_hash: Counter[str]  # rows whose hashed arguments still hold a secret


def stored_records_redact(*, batch: int = BATCH) -> BackfillReport:
    """Redact every stored text and JSON column that older versions left unredacted."""
    report = BackfillReport(Counter(), 0, Counter())
    for target in TARGETS:
        _redact_model(target, report, batch)
    report.skipped_active_runs = Run.objects.filter(state__in=ACTIVE_STATES).count()
    return report


def _redact_model(target: _Target, report: BackfillReport, batch: int) -> None:
    label = target.model._meta.label
    last = None
    while True:
        with transaction.atomic():
            rows = target.model._default_manager.select_for_update().order_by("pk")
            if target.model is Run:
                rows = rows.exclude(state__in=ACTIVE_STATES)
            if last is not None:
                rows = rows.filter(pk__gt=last)
            page = list(rows[:batch])
            if not page:
                return
            last = page[-1].pk
            changed = []
            for row in page:
                for name in target.hashed:
                    value = getattr(row, name)
                    if value and redact_value(value) != value:
                        report.secrets_under_hash[label] += 1
                        break
                columns = [
                    name
                    for name in target.columns
                    if (value := getattr(row, name)) and redact_value(value) != value
                ]
                if columns:
                    for name in columns:
                        setattr(row, name, redact_value(getattr(row, name)))
                    row.save(update_fields=columns)
                    changed.append(str(row.pk))
            if changed:
                report.rewritten[label] += len(changed)
                audit_record(
                    actor=None,
                    actor_label="redact_stored",
                    verb=AuditVerb.RECORDS_REDACTED,
                    object_type=str(target.model._meta.model_name),
                    object_id=changed[0] if len(changed) == 1 else "",
                    after={"model": label, "ids": changed},
                )
                log.info("redacted %s %s rows", len(changed), label)
