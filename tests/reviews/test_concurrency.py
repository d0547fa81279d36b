"""Many people deciding one request at the same moment: one decision, one resume.

Each decision runs on its own thread with its own database connection, and all are
released together by a barrier, so their transactions really race on PostgreSQL's row
locks. Runs are parked and resumed by real Celery worker processes, so "the run continues
exactly once" is checked where it matters: one refund row, one reply, one resume.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from agents import registry
from audit.models import AuditEvent
from examples.support.models import Refund, Reply
from examples.support.seed import seed_shop
from reviews import services
from reviews.models import ApprovalRequest, Decision, DecisionKind, RequestState
from runs import services as run_services
from runs.models import Action, ActionStatus, Run, RunState
from tests.conftest import wait_until
from tests.processes import Simulator, WorkerPool
from tests.reviews.agents import REVIEW_TEST_AGENTS, review_agents_settings
from tests.runs.checks import wait_for_all_to_end
from tests.runs.factories import seeded_ticket_input

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

THREADS = 20
STALE_APPROVAL = (
    "The arguments changed since you opened this request (someone edited them). "
    "Review the current arguments and decide again."
)
STALE_EDIT = "The arguments changed since you opened this request. Review them again."


@pytest.fixture
def careful_model(model_endpoint: Simulator) -> Iterator[Simulator]:
    """The simulator without mistakes: the same refund for the same ticket, every day."""
    before = model_endpoint.configure()["mistake_rate"]
    model_endpoint.configure(mistake_rate=0.0)
    yield model_endpoint
    model_endpoint.configure(mistake_rate=before)


@pytest.fixture
def review_agents(settings: Any, workers: WorkerPool) -> Iterator[None]:
    """The policy variants, in this process and in the workers started afterwards."""
    review_agents_settings(settings)
    workers.env["AGENTDESK_AGENTS"] = ",".join(REVIEW_TEST_AGENTS)
    yield
    registry.agents.cache_clear()


def _people(count: int) -> list[Any]:
    model = get_user_model()
    return [model.objects.create_user(username=f"reviewer{i:02d}") for i in range(count)]


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls on as many threads, released at once; each one's result or exception."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def attempt(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=60)
            results[index] = call()
        except Exception as exc:  # every kind is collected; the test says which are allowed
            results[index] = exc
        finally:
            connection.close()  # this thread's own connection

    threads = [
        threading.Thread(target=attempt, args=(i, call), name=f"decider-{i}")
        for i, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert [t.name for t in threads if t.is_alive()] == []
    return results


def _parked(ticket_id: str, agent: str = "support") -> tuple[Run, ApprovalRequest]:
    """Submit a run and let the workers take it to its approval request."""
    run, _ = run_services.run_submit(agent_name=agent, run_input=seeded_ticket_input(ticket_id))
    wait_until(
        lambda: ApprovalRequest.objects.filter(run=run, state=RequestState.PENDING).exists(),
        timeout_s=180,
        what=f"the run on {ticket_id} to wait for approval",
        describe=lambda: Run.objects.filter(pk=run.pk).values("state", "next_seq", "error"),
    )
    run.refresh_from_db()
    assert run.state == RunState.WAITING_FOR_APPROVAL
    return run, ApprovalRequest.objects.get(run=run, state=RequestState.PENDING)


def _events(verb: str, object_type: str, object_id: Any) -> int:
    return AuditEvent.objects.filter(
        verb=verb, object_type=object_type, object_id=str(object_id)
    ).count()


def _decision_events(request: ApprovalRequest) -> list[str]:
    return list(
        AuditEvent.objects.filter(
            object_type="approval_request",
            object_id=str(request.pk),
            verb__in=["request.approve", "request.edit", "request.reject"],
        )
        .order_by("id")
        .values_list("verb", flat=True)
    )


def _assert_steps_once(run: Run) -> None:
    seqs = list(run.steps.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(run.next_seq))


# --- one approver --------------------------------------------------------------------------


@pytest.mark.parametrize("mix", ["approvals only", "approve, reject and edit"])
def test_twenty_concurrent_decisions_make_one_decision_and_one_resume(
    workers: WorkerPool, careful_model: Simulator, mix: str
) -> None:
    seed_shop()
    workers.start(1, concurrency=2)
    run, request = _parked("T-0002")
    assert (request.tool, request.approvals_required) == ("issue_refund", 1)
    assert request.arguments == {
        "order_id": "SO-1002",
        "amount": "52.80",
        "reason": "Item arrived damaged",
    }
    people = _people(THREADS)
    seen = request.args_hash

    def decide(index: int) -> Callable[[], services.Outcome]:
        user = people[index]
        if mix == "approvals only" or index < 10:
            return lambda: services.approval_approve(
                request_id=request.pk, user=user, seen_hash=seen
            )
        if index < 15:
            return lambda: services.approval_reject(
                request_id=request.pk, user=user, feedback="No refund: ask for photos first."
            )
        return lambda: services.approval_edit(
            request_id=request.pk,
            user=user,
            seen_hash=seen,
            arguments={**request.arguments, "amount": "20.00"},
        )

    results = race([decide(i) for i in range(THREADS)])

    winners = [r for r in results if isinstance(r, services.Outcome)]
    losers = [r for r in results if not isinstance(r, services.Outcome)]
    assert len(winners) == 1
    assert winners[0].completed is True
    assert [type(r) for r in losers] == [services.AlreadyDecided] * (THREADS - 1)
    winner = winners[0].decision
    told = {r.message for r in losers}
    assert len(told) == 1
    assert told.pop().startswith(
        f"Already {winners[0].request.outcome} by {winner.decided_by.username} at "
    )
    assert list(Decision.objects.filter(request=request).values_list("pk", flat=True)) == [
        winner.pk
    ]
    request.refresh_from_db()
    kind = winner.kind
    expected_state = RequestState.REJECTED if kind == DecisionKind.REJECT else RequestState.APPROVED
    assert request.state == expected_state
    assert _decision_events(request) == [f"request.{kind}"]
    assert _events("run.resumed", "run", run.pk) == 1

    wait_for_all_to_end([run.pk], timeout_s=180, what="the run to finish after the decision")

    run.refresh_from_db()
    assert run.state == RunState.SUCCEEDED, run.error
    refunds = [r.amount for r in Refund.objects.filter(order__order_id="SO-1002")]
    action = Action.objects.get(pk=request.action_id)
    if kind == DecisionKind.APPROVE:
        assert refunds == [Decimal("52.80")]
        assert action.status == ActionStatus.SUCCEEDED
    elif kind == DecisionKind.EDIT:
        assert refunds == [Decimal("20.00")]
        assert action.status == ActionStatus.SUCCEEDED
    else:
        assert refunds == []
        assert action.status == ActionStatus.REJECTED
    assert Action.objects.filter(run=run, tool="issue_refund").count() == 1
    assert Refund.objects.filter(idempotency_key=action.idempotency_key).count() == (
        0 if kind == DecisionKind.REJECT else 1
    )
    # The run waited once and resumed once, and no step ran twice.
    assert _events("run.waiting_for_approval", "run", run.pk) == 1
    assert _events("run.resumed", "run", run.pk) == 1
    _assert_steps_once(run)
    # The agent answered the customer or handed off exactly once.
    assert (
        Action.objects.filter(
            run=run, tool__in=["send_reply", "handoff_to_human"], status=ActionStatus.SUCCEEDED
        ).count()
        == 1
    )


# --- two approvers -------------------------------------------------------------------------


def test_twenty_concurrent_decisions_under_a_two_person_rule(
    workers: WorkerPool, careful_model: Simulator, review_agents: None
) -> None:
    """10 approve, 5 reject and 5 edit, all having seen the original arguments.

    Whatever the order the locks grant, the request ends one of two ways: two distinct
    people approved the proposed arguments (approve, approve), or a rejection came first
    after at most one approval and one edit. Every other attempt is refused as decided,
    or as stale (it saw arguments an edit replaced).
    """
    seed_shop()
    workers.start(1, concurrency=2)
    run, request = _parked("T-0002", agent="support_two_person")
    assert (request.rule, request.approvals_required) == ("refund_two_person", 2)
    people = _people(THREADS)
    seen = request.args_hash
    proposed = dict(request.arguments)

    def decide(index: int) -> Callable[[], services.Outcome]:
        user = people[index]
        if index < 10:
            return lambda: services.approval_approve(
                request_id=request.pk, user=user, seen_hash=seen
            )
        if index < 15:
            return lambda: services.approval_reject(
                request_id=request.pk, user=user, feedback="No refund: ask for photos first."
            )
        return lambda: services.approval_edit(
            request_id=request.pk,
            user=user,
            seen_hash=seen,
            arguments={**proposed, "amount": "30.00"},
        )

    results = race([decide(i) for i in range(THREADS)])

    outcomes = [r for r in results if isinstance(r, services.Outcome)]
    refused = [r for r in results if not isinstance(r, services.Outcome)]
    assert [type(r) for r in refused if not isinstance(r, services.DecisionRefused)] == []
    assert [o.completed for o in outcomes].count(True) == 1
    decisions = list(Decision.objects.filter(request=request).order_by("pk"))
    assert sorted(d.pk for d in decisions) == sorted(o.decision.pk for o in outcomes)
    kinds = [d.kind for d in decisions]
    # The completing decision is the last one; nothing was recorded after it.
    completing = next(o for o in outcomes if o.completed).decision
    assert decisions[-1].pk == completing.pk
    request.refresh_from_db()
    if request.state == RequestState.APPROVED:
        assert kinds == [DecisionKind.APPROVE, DecisionKind.APPROVE]
        assert len({d.decided_by_id for d in decisions}) == 2
        assert {d.args_hash for d in decisions} == {seen} == {request.args_hash}
    else:
        assert request.state == RequestState.REJECTED
        assert kinds in (
            [DecisionKind.REJECT],
            [DecisionKind.APPROVE, DecisionKind.REJECT],
            [DecisionKind.EDIT, DecisionKind.REJECT],
            [DecisionKind.APPROVE, DecisionKind.EDIT, DecisionKind.REJECT],
        )
    # Refusals: decided already, or stale because an edit came first.
    stale = [r for r in refused if not isinstance(r, services.AlreadyDecided)]
    assert {r.message for r in stale} <= {STALE_APPROVAL, STALE_EDIT}
    if DecisionKind.EDIT not in kinds:
        assert stale == []
    assert len(outcomes) + len(refused) == THREADS
    assert _decision_events(request) == [f"request.{k}" for k in kinds]
    assert _events("run.resumed", "run", run.pk) == 1

    wait_for_all_to_end([run.pk], timeout_s=180, what="the run to finish after the decisions")

    run.refresh_from_db()
    assert run.state == RunState.SUCCEEDED, run.error
    refunds = [r.amount for r in Refund.objects.filter(order__order_id="SO-1002")]
    if request.state == RequestState.APPROVED:
        assert refunds == [Decimal(proposed["amount"])]
    else:
        assert refunds == []
    assert _events("run.resumed", "run", run.pk) == 1
    _assert_steps_once(run)


# --- bulk approval -------------------------------------------------------------------------


def test_bulk_approval_racing_single_approvals_decides_each_request_once(
    workers: WorkerPool, careful_model: Simulator, review_agents: None
) -> None:
    """Five bulk approvals of two replies race five single approvals of the first.

    Bulk approval is all or nothing: when a single approval takes the first request, every
    bulk approval is refused and the second request stays pending, untouched.
    """
    seed_shop()
    workers.start(1, concurrency=2)
    first_run, first = _parked("T-0001", agent="support_reply_reviewed")
    second_run, second = _parked("T-0008", agent="support_reply_reviewed")
    for request in (first, second):
        assert (request.tool, request.rule, request.risk, request.approvals_required) == (
            "send_reply",
            "every_reply",
            "write",
            1,
        )
    people = _people(10)
    hashes = {first.pk: first.args_hash, second.pk: second.args_hash}

    def decide(index: int) -> Callable[[], Any]:
        user = people[index]
        if index % 2 == 0:
            return lambda: services.approval_bulk_approve(
                request_ids=[first.pk, second.pk], user=user, seen_hashes=hashes
            )
        return lambda: services.approval_approve(
            request_id=first.pk, user=user, seen_hash=first.args_hash
        )

    results = race([decide(i) for i in range(10)])

    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1
    assert [type(r) for r in lost] == [services.AlreadyDecided] * 9
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.state == RequestState.APPROVED
    assert Decision.objects.filter(request=first).count() == 1
    bulk_won = isinstance(won[0], list)
    if bulk_won:
        assert [o.completed for o in won[0]] == [True, True]
        assert second.state == RequestState.APPROVED
        assert Decision.objects.filter(request=second).count() == 1
        assert (
            Decision.objects.get(request=first).decided_by
            == Decision.objects.get(request=second).decided_by
        )
    else:
        assert second.state == RequestState.PENDING
        assert Decision.objects.filter(request=second).count() == 0
        assert _events("run.resumed", "run", second_run.pk) == 0
        second_run.refresh_from_db()
        assert second_run.state == RunState.WAITING_FOR_APPROVAL
        services.approval_approve(request_id=second.pk, user=people[0], seen_hash=second.args_hash)
    assert _events("run.resumed", "run", first_run.pk) == 1
    assert _events("run.resumed", "run", second_run.pk) == 1

    wait_for_all_to_end([first_run.pk, second_run.pk], timeout_s=180, what="both runs to finish")

    for run, ticket_id in ((first_run, "T-0001"), (second_run, "T-0008")):
        run.refresh_from_db()
        assert run.state == RunState.SUCCEEDED, run.error
        replies = Action.objects.filter(run=run, tool="send_reply")
        assert [a.status for a in replies] == [ActionStatus.SUCCEEDED]
        assert list(
            Reply.objects.filter(
                ticket_id=ticket_id, idempotency_key__startswith=str(run.id)
            ).values_list("idempotency_key", flat=True)
        ) == [replies[0].idempotency_key]
        assert _events("run.resumed", "run", run.pk) == 1
        _assert_steps_once(run)
