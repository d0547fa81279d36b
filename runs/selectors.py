"""Reads of runs for pages and the API."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.db import connection
from django.db.models import QuerySet

from reviews.models import ApprovalRequest, RequestState
from runs.models import DeadLetter, DeadLetterStatus, Degradation, Run, RunState, Step

User = AuthUser | AnonymousUser


def run_list_visible(*, user: User, state: str | None = None) -> QuerySet[Run]:
    """Runs the user may see, newest first.

    Until queues bring per-object access, seeing runs is the model permission
    ``runs.view_run`` (reviewers, operators, auditors).
    """
    if not user.has_perm("runs.view_run"):
        return Run.objects.none()
    runs = Run.objects.select_related("submitted_by").defer("checkpoint", "input")
    if state:
        runs = runs.filter(state=state)
    return runs


# The runs list's degraded filter: any reason, none, or one reason (a Degradation value).
DEGRADED_ANY = "yes"
DEGRADED_NONE = "no"
DEGRADED_FILTERS = (DEGRADED_ANY, DEGRADED_NONE, *Degradation.values)


def runs_filter_degraded(runs: QuerySet[Run], *, degraded: str | None) -> QuerySet[Run]:
    """``runs`` narrowed by how they were degraded; unchanged for None or an unknown value."""
    if degraded == DEGRADED_ANY:
        return runs.exclude(degraded=[])
    if degraded == DEGRADED_NONE:
        return runs.filter(degraded=[])
    if degraded not in Degradation.values:
        return runs
    if connection.features.supports_json_field_contains:  # PostgreSQL: jsonb @>
        return runs.filter(degraded__contains=[degraded])
    # SQLite (the embedded mode) has no JSON containment: the quoted value in the text.
    return runs.filter(degraded__icontains=f'"{degraded}"')


def run_get_visible(*, user: User, run_id: str) -> Run | None:
    if not user.has_perm("runs.view_run"):
        return None
    return Run.objects.select_related("submitted_by", "config_version").filter(pk=run_id).first()


def run_pending_request(*, run: Run) -> ApprovalRequest | None:
    """The approval request the run waits on, if any (the link is 404 to who may not see it)."""
    if run.state not in (RunState.WAITING_FOR_APPROVAL, RunState.NEEDS_HUMAN):
        return None
    return (
        ApprovalRequest.objects.select_related("queue")
        .filter(run=run, state=RequestState.PENDING)
        .first()
    )


def run_steps(*, run: Run) -> QuerySet[Step]:
    return run.steps.select_related("executed_action").order_by("seq")


def dead_letters_open() -> QuerySet[DeadLetter]:
    return DeadLetter.objects.filter(status=DeadLetterStatus.OPEN).select_related("run")


def dead_letter_get(*, letter_id: int) -> DeadLetter | None:
    return DeadLetter.objects.select_related("run", "resolved_by").filter(pk=letter_id).first()
