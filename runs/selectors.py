"""Reads of runs for pages and the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.db import connection
from django.db.models import Count, Min, Q, QuerySet
from guardian.shortcuts import get_objects_for_user

from reviews.models import ApprovalRequest, RequestState
from runs.models import DeadLetter, DeadLetterStatus, Degradation, Run, RunPurpose, RunState, Step

User = AuthUser | AnonymousUser

VIEW_RUNS = "runs.view_run"  # opens the runs pages; which runs: by queue, or by role
VIEW_ALL_RUNS = "runs.view_all_runs"  # operators and auditors: every run
# By name, through guardian: the runtime reads which queues a person may open without
# importing reviews/ (the dependency points the other way).
VIEW_QUEUE = "reviews.view_queue"


def _queue_ids_visible(user: User) -> list[int]:
    """Ids of the queues the user may open (a global grant counts for every queue)."""
    if not user.is_authenticated or not user.is_active:
        return []
    queues: QuerySet[Any] = get_objects_for_user(user, VIEW_QUEUE, accept_global_perms=True)
    return list(queues.order_by().values_list("id", flat=True))


@dataclass(frozen=True)
class RunView:
    """A run as one reader may see it.

    ``full``: by role (``runs.view_all_runs``), everything. Otherwise the reader is a
    reviewer who sees the run because it has a request in a queue they may open, and sees
    nothing of its requests in other queues: not their queue, routing reason, arguments
    or feedback. Those live on in the run's record after the request: the proposing
    model step names the call with its arguments, and every later step's state carries
    the conversation, the reviewer's feedback included. So every step from the first
    hidden call on shows only its header, and the final answer and error (written after
    it) are withheld.
    """

    run: Run
    full: bool
    queue_ids: frozenset[int]
    hidden_requests: int
    withheld_from_seq: int | None

    @property
    def outcome_withheld(self) -> bool:
        return self.hidden_requests > 0

    def shows_request(self, request: ApprovalRequest | None) -> bool:
        return request is not None and (self.full or request.queue_id in self.queue_ids)


def run_list_visible(*, user: User, state: str | None = None) -> QuerySet[Run]:
    """Runs the user may see, newest first: every run by role, else by queue."""
    if not user.has_perm(VIEW_RUNS):
        return Run.objects.none()
    # The input is read: the list shows each run's title, made from it (runs.presenters).
    # Live runs: an eval's or a shadow's sandboxed runs are shown by their eval.
    runs = (
        Run.objects.select_related("submitted_by")
        .defer("checkpoint")
        .filter(purpose=RunPurpose.LIVE)
    )
    if not user.has_perm(VIEW_ALL_RUNS):
        # A semi-join (IN a subquery), not a join: a run with three requests is one row.
        # The subquery reads the requests' run ids alone (no second pass over runs), from
        # the model at the other end of the relation, which runs/ does not import.
        requests = Run.approval_requests.rel.related_model._default_manager
        queue_ids = _queue_ids_visible(user)
        with_requests = requests.filter(queue_id__in=queue_ids).values("run_id")
        runs = runs.filter(pk__in=with_requests)
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


def run_get_visible(*, user: User, run_id: str) -> RunView | None:
    """The run and what of it the user may see, or None (no such run, or no access: 404)."""
    if not user.has_perm(VIEW_RUNS):
        return None
    run = (
        Run.objects.select_related("submitted_by", "config_version", "release")
        .filter(pk=run_id)
        .first()
    )
    if run is None:
        return None
    if user.has_perm(VIEW_ALL_RUNS):
        return RunView(
            run=run, full=True, queue_ids=frozenset(), hidden_requests=0, withheld_from_seq=None
        )
    queue_ids = frozenset(_queue_ids_visible(user))
    if not queue_ids:
        return None
    requests = run.approval_requests.order_by().aggregate(
        seen=Count("id", filter=_in_queues(queue_ids)),
        hidden=Count("id", filter=~_in_queues(queue_ids)),
        first_hidden=Min("action__proposed_seq", filter=~_in_queues(queue_ids)),
    )
    if not requests["seen"]:
        return None
    return RunView(
        run=run,
        full=False,
        queue_ids=queue_ids,
        hidden_requests=requests["hidden"],
        withheld_from_seq=requests["first_hidden"],
    )


def _in_queues(queue_ids: frozenset[int]) -> Q:
    return Q(queue_id__in=list(queue_ids))


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
