"""A decision writes its outcome onto the action it decides; the resumed step reads only that.

The runtime never reads the approvals side's records (runs.kernel.approvals): what the step runs
after a review is what the decision wrote onto the action, in the decision's transaction.
Requests are opened through the opener the reviews app registers; without one, the run is
dead-lettered with a clear error, never parked where nobody sees it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.apps import apps

from examples.support.models import Refund
from examples.support.seed import seed_shop
from reviews import services
from reviews.models import ApprovalRequest, Decision, DecisionKind, Queue, RequestState
from reviews.services import deciding
from runs import services as run_services
from runs.kernel import approvals
from runs.models import Action, ActionStatus, DeadLetter, ReviewOutcome, Run, RunState
from tests.processes import Simulator
from tests.reviews.factories import request_make
from tests.runs.factories import drive, seeded_ticket_input

pytestmark = pytest.mark.django_db

UNDECIDED = {
    "review_outcome": "",
    "approved_arguments": None,
    "approved_args_hash": "",
    "review_feedback": "",
    "decided_by_id": None,
    "decided_at": None,
}


@pytest.fixture
def shop(db: None) -> None:
    seed_shop()


def _parked(ticket_id: str = "T-0002") -> tuple[Run, ApprovalRequest]:
    run, _ = run_services.run_submit(agent_name="support", run_input=seeded_ticket_input(ticket_id))
    run = drive(run)
    assert run.state == RunState.WAITING_FOR_APPROVAL
    return run, ApprovalRequest.objects.get(run=run, state=RequestState.PENDING)


def _decided(action_id: int | None) -> dict[str, Any]:
    return Action.objects.filter(pk=action_id).values(*UNDECIDED).get()


def test_an_approval_writes_the_approved_arguments_and_who_onto_the_action(
    shop: None, model_endpoint: Simulator, reviewer: Any
) -> None:
    _, request = _parked()
    assert _decided(request.action_id) == UNDECIDED  # parked: nothing decided yet

    services.approval_approve(request_id=request.pk, user=reviewer, seen_hash=request.args_hash)

    request.refresh_from_db()
    assert _decided(request.action_id) == {
        "review_outcome": ReviewOutcome.APPROVED,
        "approved_arguments": request.arguments,
        "approved_args_hash": request.args_hash,
        "review_feedback": "",
        "decided_by_id": reviewer.pk,
        "decided_at": request.decided_at,
    }


def test_a_rejection_writes_the_feedback_and_the_resumed_step_hands_it_to_the_model(
    shop: None, model_endpoint: Simulator, reviewer: Any
) -> None:
    run, request = _parked()

    services.approval_reject(request_id=request.pk, user=reviewer, feedback="Refund 10 only.")

    request.refresh_from_db()
    assert _decided(request.action_id) == {
        "review_outcome": ReviewOutcome.REJECTED,
        "approved_arguments": None,
        "approved_args_hash": "",
        "review_feedback": "Refund 10 only.",
        "decided_by_id": reviewer.pk,
        "decided_at": request.decided_at,
    }
    run = drive(run)
    action = Action.objects.get(pk=request.action_id)
    assert action.status == ActionStatus.REJECTED
    assert action.result["error"] == {
        "class": "review_rejected",
        "message": "A reviewer rejected this call. Their feedback: Refund 10 only.",
        "details": {"feedback": "Refund 10 only."},
    }
    assert Refund.objects.filter(order__order_id="SO-1002").count() == 0


def test_a_decision_that_fails_leaves_the_action_untouched(
    shop: None, model_endpoint: Simulator, reviewer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outcome is written in the decision's transaction: it rolls back with it."""
    run, request = _parked()

    def broken(**kwargs: Any) -> None:  # the last write of _complete, after the action's
        raise RuntimeError("the broadcast failed")

    monkeypatch.setattr(deciding, "queue_changed", broken)
    with pytest.raises(RuntimeError, match="the broadcast failed"):
        services.approval_approve(request_id=request.pk, user=reviewer, seen_hash=request.args_hash)

    assert _decided(request.action_id) == UNDECIDED
    request.refresh_from_db()
    assert request.state == RequestState.PENDING
    assert Decision.objects.filter(request=request).count() == 0
    assert Run.objects.get(pk=run.pk).state == RunState.WAITING_FOR_APPROVAL


def test_an_action_resolved_already_refuses_a_second_outcome(reviewer: Any) -> None:
    """Used once: an action that carries an outcome makes a later decision roll back."""
    request = request_make(queue=Queue.objects.create(slug="refunds", name="Refunds"))
    Action.objects.filter(pk=request.action_id).update(
        review_outcome=ReviewOutcome.REJECTED, review_feedback="no"
    )

    with pytest.raises(RuntimeError, match="resolved already"):
        services.approval_approve(request_id=request.pk, user=reviewer, seen_hash=request.args_hash)

    assert _decided(request.action_id) == {
        **UNDECIDED,
        "review_outcome": ReviewOutcome.REJECTED,
        "review_feedback": "no",
    }
    request.refresh_from_db()
    assert request.state == RequestState.PENDING


def test_the_resumed_step_runs_the_arguments_recorded_on_the_action(
    shop: None, model_endpoint: Simulator, reviewer: Any
) -> None:
    """An approved edit runs with the edited arguments, read from the action alone."""
    run, request = _parked()
    proposed = dict(request.arguments)
    services.approval_edit(
        request_id=request.pk,
        user=reviewer,
        seen_hash=request.args_hash,
        arguments={**proposed, "amount": "20.5"},
    )
    edited = ApprovalRequest.objects.get(pk=request.pk).arguments
    assert edited != proposed
    # The request no longer says what was approved: the step does not read it.
    ApprovalRequest.objects.filter(pk=request.pk).update(arguments=proposed, args_hash="x")

    run = drive(run)

    assert run.state == RunState.SUCCEEDED
    assert [r.amount for r in Refund.objects.filter(order__order_id="SO-1002")] == [
        Decimal("20.50")
    ]
    action = Action.objects.get(pk=request.action_id)
    assert action.review_outcome == ReviewOutcome.EDITED
    assert action.approved_arguments == edited
    assert action.step is not None
    assert action.step.action["arguments"] == edited


def test_approved_arguments_that_do_not_match_their_hash_never_run(
    shop: None, model_endpoint: Simulator, reviewer: Any
) -> None:
    run, request = _parked()
    services.approval_approve(request_id=request.pk, user=reviewer, seen_hash=request.args_hash)
    changed = {**request.arguments, "amount": "290.00"}
    Action.objects.filter(pk=request.action_id).update(approved_arguments=changed)

    run = drive(run)

    assert run.state == RunState.DEAD_LETTERED
    assert "the arguments do not match their hash" in run.error["message"]
    assert Refund.objects.filter(order__order_id="SO-1002").count() == 0


@pytest.fixture
def no_reviews_opener() -> Iterator[None]:
    """As if the reviews app were not installed: nobody registered the request opener."""
    registered = approvals.register_opener(None)
    try:
        yield
    finally:
        approvals.register_opener(registered)


def test_a_review_without_the_reviews_app_fails_with_a_clear_error(
    shop: None, model_endpoint: Simulator, no_reviews_opener: None
) -> None:
    run, _ = run_services.run_submit(agent_name="support", run_input=seeded_ticket_input("T-0002"))

    run = drive(run)

    assert run.state == RunState.DEAD_LETTERED
    letter = DeadLetter.objects.get(run=run)
    assert "ApprovalsUnavailable" in letter.error["message"]
    assert "no approvals app is installed" in letter.error["message"]
    assert "add 'reviews' to INSTALLED_APPS" in letter.error["message"]
    assert ApprovalRequest.objects.count() == 0
    assert Refund.objects.filter(order__order_id="SO-1002").count() == 0
    refund = Action.objects.get(run=run, tool="issue_refund")
    assert refund.status == ActionStatus.PROPOSED


def test_the_upgrade_writes_the_outcome_of_calls_decided_before_it(reviewer: Any) -> None:
    """reviews/0006: requests decided before the upgrade give their actions the outcome."""
    queue = Queue.objects.create(slug="refunds", name="Refunds")
    approved = request_make(queue=queue)
    rejected = request_make(queue=queue, proposed_seq=2, run=approved.run)
    pending = request_make(queue=queue, proposed_seq=3, run=approved.run)
    for request, state, outcome, kind in (
        (approved, RequestState.APPROVED, "approved", DecisionKind.APPROVE),
        (rejected, RequestState.REJECTED, "rejected", DecisionKind.REJECT),
    ):
        Decision.objects.create(
            request=request,
            kind=DecisionKind.ESCALATE,
            args_hash=request.args_hash,
            from_queue=queue,
            to_queue=queue,
        )
        Decision.objects.create(
            request=request, kind=kind, decided_by=reviewer, args_hash=request.args_hash
        )
        ApprovalRequest.objects.filter(pk=request.pk).update(
            state=state, outcome=outcome, feedback="too much" if kind == "reject" else ""
        )
    migration = importlib.import_module("reviews.migrations.0006_action_review_outcome_backfill")

    migration.backfill(apps, None)
    migration.backfill(apps, None)  # a second pass changes nothing

    approved.refresh_from_db()
    rejected.refresh_from_db()
    assert _decided(approved.action_id) == {
        "review_outcome": ReviewOutcome.APPROVED,
        "approved_arguments": approved.arguments,
        "approved_args_hash": approved.args_hash,
        "review_feedback": "",
        "decided_by_id": reviewer.pk,
        "decided_at": approved.decided_at,
    }
    assert _decided(rejected.action_id) == {
        **UNDECIDED,
        "review_outcome": ReviewOutcome.REJECTED,
        "review_feedback": "too much",
        "decided_by_id": reviewer.pk,
    }
    assert _decided(pending.action_id) == UNDECIDED
