"""Park → decide → resume, driven in this process against the simulator over HTTP.

The worker-side flow (the step that opens a request, the step that runs the approved
arguments) is called the way the Celery task calls it; the reviewer's side through the
services the views call.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from audit.models import AuditEvent
from examples.support.models import Refund
from examples.support.seed import seed_shop
from reviews import services
from reviews.models import ApprovalRequest, Decision, GoldenCandidate, RequestState
from runs import services as run_services
from runs.models import Action, ActionStatus, Run, RunState
from tests.processes import Simulator
from tests.runs.factories import drive, seeded_ticket_input

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(db: None) -> None:
    seed_shop()


def _parked(ticket_id: str) -> tuple[Run, ApprovalRequest]:
    run, _ = run_services.run_submit(agent_name="support", run_input=seeded_ticket_input(ticket_id))
    run = drive(run)
    assert run.state == RunState.WAITING_FOR_APPROVAL
    return run, ApprovalRequest.objects.get(run=run, state=RequestState.PENDING)


def test_a_refund_waits_for_approval_and_runs_once_approved(
    shop: None, model_endpoint: Simulator, reviewer: Any
) -> None:
    run, request = _parked("T-0002")  # a shattered teapot: refund 29.00

    assert request.tool == "issue_refund"
    proposed = Action.objects.get(pk=request.action_id).arguments
    assert request.arguments == {**proposed, "amount": str(Decimal(proposed["amount"]))}
    amount = Decimal(request.arguments["amount"])
    assert request.queue.slug == "refunds"
    assert request.rule == "risk"
    assert request.context["records"]["order"]["order_id"] == "SO-1002"
    assert [h["tool"] for h in request.context["history"]][:1] == ["lookup_order"]
    assert Refund.objects.filter(order__order_id="SO-1002").count() == 0
    action = Action.objects.get(pk=request.action_id)
    assert action.verdict == "review"
    assert action.policy_version.startswith("pol-")

    outcome = services.approval_approve(
        request_id=request.pk, user=reviewer, seen_hash=request.args_hash
    )
    assert outcome.completed
    run.refresh_from_db()
    assert run.state == RunState.RUNNING
    run = drive(run)

    assert run.state == RunState.SUCCEEDED
    refunds = Refund.objects.filter(order__order_id="SO-1002")
    assert [r.amount for r in refunds] == [amount]
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    verbs = list(
        AuditEvent.objects.filter(object_type__in=["run", "approval_request"]).values_list(
            "verb", flat=True
        )
    )
    assert "request.opened" in verbs
    assert "request.approve" in verbs
    assert "run.resumed" in verbs


def test_an_edited_approval_executes_the_edited_arguments_exactly(
    shop: None, model_endpoint: Simulator, reviewer: Any
) -> None:
    run, request = _parked("T-0002")
    edited = {**request.arguments, "amount": "20.5"}

    services.approval_edit(
        request_id=request.pk, user=reviewer, seen_hash=request.args_hash, arguments=edited
    )
    run = drive(run)

    assert [r.amount for r in Refund.objects.filter(order__order_id="SO-1002")] == [
        Decimal("20.50")
    ]
    candidate = GoldenCandidate.objects.get(run=run)
    assert candidate.correction == {"kind": "edit", "arguments": edited}
    assert candidate.proposal["arguments"] == Action.objects.get(pk=request.action_id).arguments


def test_an_invalid_edit_is_refused_and_nothing_is_saved(
    shop: None, model_endpoint: Simulator, reviewer: Any
) -> None:
    run, request = _parked("T-0002")
    before = (request.arguments, request.args_hash)

    with pytest.raises(services.DecisionRefused) as refused:
        services.approval_edit(
            request_id=request.pk,
            user=reviewer,
            seen_hash=request.args_hash,
            arguments={**request.arguments, "amount": "-5"},
        )

    assert "amount" in refused.value.field_errors
    request.refresh_from_db()
    assert (request.arguments, request.args_hash) == before
    assert request.state == RequestState.PENDING
    assert Decision.objects.count() == 0
    assert GoldenCandidate.objects.count() == 0
    run.refresh_from_db()
    assert run.state == RunState.WAITING_FOR_APPROVAL


def test_an_approval_cannot_be_replayed_for_other_arguments(
    shop: None, model_endpoint: Simulator, reviewer: Any, operator: Any
) -> None:
    _run, request = _parked("T-0002")
    seen = request.args_hash
    services.approval_edit(
        request_id=request.pk,
        user=operator,
        seen_hash=seen,
        arguments={**request.arguments, "amount": "10.00"},
    )

    # The request was decided: a second approval of anything is refused.
    with pytest.raises(services.AlreadyDecided):
        services.approval_approve(request_id=request.pk, user=reviewer, seen_hash=seen)
    assert Decision.objects.filter(request=request).count() == 1


def test_a_rejection_returns_the_feedback_to_the_agent(
    shop: None, model_endpoint: Simulator, reviewer: Any
) -> None:
    run, request = _parked("T-0002")

    services.approval_reject(
        request_id=request.pk, user=reviewer, feedback="Refund the sencha only, not the teapot."
    )
    run = drive(run)

    assert Refund.objects.filter(order__order_id="SO-1002").count() == 0
    action = Action.objects.get(pk=request.action_id)
    assert action.status == ActionStatus.REJECTED
    assert action.result["error"]["class"] == "review_rejected"
    assert "sencha only" in action.result["error"]["message"]
    candidate = GoldenCandidate.objects.get(run=run)
    assert candidate.correction == {
        "kind": "reject",
        "feedback": "Refund the sencha only, not the teapot.",
    }
    assert run.state != RunState.FAILED


def test_a_rejection_needs_feedback(shop: None, model_endpoint: Simulator, reviewer: Any) -> None:
    _run, request = _parked("T-0002")

    with pytest.raises(services.DecisionRefused):
        services.approval_reject(request_id=request.pk, user=reviewer, feedback="   ")

    request.refresh_from_db()
    assert request.state == RequestState.PENDING
    assert Decision.objects.count() == 0
