"""Read-only calls made within their model step, and commits that lost their lease.

A model step makes the leading calls of its reply that only read at once and records them
with itself, each as its own tool step (runs.kernel.tool_step.read_calls_inline); everything else
is left to tool steps. A read that fails there ends as it would in a tool step: refused by
its open breaker or answered with a ToolError, it is settled and the model is told; crashed,
it is attempt 1 and its tool step retries it. And a commit checks its lease in its last
UPDATE: one that lost it records nothing and stops its chain.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from examples.support.models import Order
from examples.support.seed import seed_shop
from runs import services
from runs.gateway.breakers import tool_breaker_name
from runs.kernel import stepping
from runs.models import (
    Action,
    ActionStatus,
    BreakerState,
    CircuitBreaker,
    Run,
    RunState,
    Step,
    StepKind,
)
from tests.processes import Simulator
from tests.runs.factories import seeded_ticket_input

pytestmark = pytest.mark.django_db

REFUND_TICKET = "T-0002"  # lookup (read), policy check (read), refund (irreversible), reply


@pytest.fixture
def shop(db: None) -> None:
    seed_shop()


def _submit(agent: str = "support") -> Run:
    run, _ = services.run_submit(agent_name=agent, run_input=seeded_ticket_input(REFUND_TICKET))
    return run


def _trail(run: Run) -> list[tuple[int, str, str, str]]:
    return [
        (s.seq, s.kind, s.action.get("tool") or s.action.get("type", ""), s.error_class)
        for s in Step.objects.filter(run=run).order_by("seq")
    ]


def _action_events(action: Action) -> list[tuple[str, Any, str]]:
    return [
        (verb, before, after["status"])
        for verb, before, after in AuditEvent.objects.filter(
            object_type="action", object_id=str(action.pk)
        )
        .order_by("seq")
        .values_list("verb", "before", "after")
    ]


def test_a_read_is_made_and_recorded_as_its_own_step_within_its_model_step(
    shop: None, model_endpoint: Simulator, django_capture_on_commit_callbacks: Any
) -> None:
    run = _submit()
    with django_capture_on_commit_callbacks() as sent:
        services.run_step_execute(run_id=str(run.id), seq=0, chain_s=0)

    run.refresh_from_db()
    assert _trail(run) == [(0, "model", "tool_calls", ""), (1, "tool", "lookup_order", "")]
    assert (run.next_seq, run.tool_calls, run.checkpoint["pending_actions"]) == (2, 1, [])
    assert len(sent) == 1  # one message, for step 2
    action = Action.objects.get(run=run)
    tool_step = Step.objects.get(run=run, seq=1)
    assert (action.status, action.step_id, action.verdict, action.error_class) == (
        ActionStatus.SUCCEEDED,
        tool_step.pk,
        "execute",
        "",
    )
    assert action.result["order_id"] == "SO-1002"
    assert action.executed_at is not None
    assert tool_step.outcome == {"result": action.result}
    assert tool_step.action["idempotency_key"] == f"{run.id}:0:0"
    # The model sees the result as if a tool step had returned it.
    last = run.checkpoint["messages"][-1]
    assert (last["role"], last["tool_call_id"]) == ("tool", action.tool_call_id)
    assert json.loads(last["content"]) == action.result
    assert _action_events(action) == [
        ("action.proposed", None, "proposed"),
        ("action.succeeded", {"status": "executing"}, "succeeded"),
    ]


def test_a_call_with_an_effect_is_left_to_its_tool_step(
    shop: None, model_endpoint: Simulator
) -> None:
    run = _submit()
    while not run.checkpoint["pending_actions"]:
        services.run_step_execute(run_id=str(run.id), seq=run.next_seq, chain_s=0)
        run.refresh_from_db()

    refund = Action.objects.get(pk=run.checkpoint["pending_actions"][0])
    assert (refund.tool, refund.status, refund.step_id) == ("issue_refund", "proposed", None)
    # The model step that proposed it recorded only itself.
    assert _trail(run)[-1] == (run.next_seq - 1, "model", "tool_calls", "")

    services.run_step_execute(run_id=str(run.id), seq=run.next_seq, chain_s=0)
    refund.refresh_from_db()
    assert refund.status == ActionStatus.SUCCEEDED
    assert _action_events(refund) == [
        ("action.proposed", None, "proposed"),
        ("action.succeeded", {"status": "executing"}, "succeeded"),
    ]


def test_the_tool_call_limit_holds_for_reads_made_within_a_model_step(
    shop: None, model_endpoint: Simulator
) -> None:
    """tight_tools allows one tool call: the lookup is made, the policy check is not."""
    run = _submit("tight_tools")
    services.run_step_execute(run_id=str(run.id), seq=0, chain_s=30)

    run.refresh_from_db()
    assert run.state == RunState.FAILED
    assert run.error["class"] == "budget_exceeded"
    assert run.error["message"] == "the run reached its limit of 1 tool calls"
    assert run.tool_calls == 1
    assert _trail(run) == [
        (0, "model", "tool_calls", ""),
        (1, "tool", "lookup_order", ""),
        (2, "model", "tool_calls", ""),
    ]
    policy_check = Action.objects.get(run=run, tool="search_refund_policy")
    assert (policy_check.status, policy_check.step_id) == (ActionStatus.PROPOSED, None)


def test_a_commit_that_lost_its_lease_records_nothing_and_ends_its_chain(
    shop: None, model_endpoint: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease expired while the step worked and another worker took the run over."""
    run = _submit()
    other = uuid.uuid4()
    step = services._step
    steps_taken: list[int] = []

    def taken_over_while_working(claimed: Run, seq: int) -> None:
        steps_taken.append(seq)
        Run.objects.filter(pk=claimed.pk).update(lease_token=other)
        step(claimed, seq)

    monkeypatch.setattr(services, "_step", taken_over_while_working)
    services.run_step_execute(run_id=str(run.id), seq=0, chain_s=30)

    run.refresh_from_db()
    assert steps_taken == [0]  # the chain stopped at the lost commit
    assert (run.next_seq, run.lease_token, run.state) == (0, other, RunState.RUNNING)
    assert _trail(run) == []
    assert not Action.objects.filter(run=run).exists()
    assert not AuditEvent.objects.filter(object_type="action").exists()


def test_a_commit_whose_step_the_new_holder_recorded_first_is_discarded(
    shop: None, model_endpoint: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other worker already recorded this step number: the unique (run, seq) says so."""
    run = _submit()
    other = uuid.uuid4()
    step = services._step
    steps_taken: list[int] = []

    def recorded_by_another_worker(claimed: Run, seq: int) -> None:
        steps_taken.append(seq)
        # The other worker recorded step 0 and holds the lease on step 1.
        stepping.StepRecord(kind=StepKind.MODEL, state={}, started_at=timezone.now()).build(
            claimed, seq
        ).save(force_insert=True)
        Run.objects.filter(pk=claimed.pk).update(lease_token=other, next_seq=seq + 1)
        step(claimed, seq)

    monkeypatch.setattr(services, "_step", recorded_by_another_worker)
    services.run_step_execute(run_id=str(run.id), seq=0, chain_s=30)

    run.refresh_from_db()
    assert steps_taken == [0]  # not step 1, whose lease is the other worker's
    assert (run.next_seq, run.lease_token) == (1, other)
    assert [s.state for s in Step.objects.filter(run=run)] == [{}]  # only the other's
    assert not Action.objects.filter(run=run).exists()


# --- a read that fails within its model step --------------------------------------------------


class _Unreachable:
    """Stands in for the shop's Order model while its database is 'down'."""

    class objects:  # the manager's name
        @staticmethod
        def select_related(*fields: str) -> Any:
            raise ConnectionError("the shop's database is unreachable")


def test_a_read_refused_by_its_open_breaker_is_not_made_and_the_model_is_told(
    shop: None, model_endpoint: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were the tool called anyway, it would crash (tool_crashed), not be refused.
    monkeypatch.setattr("examples.support.tools.Order", _Unreachable)
    opened_at = timezone.now()
    CircuitBreaker.objects.create(
        name=tool_breaker_name("lookup_order"),
        state=BreakerState.OPEN,
        failure_count=5,
        opened_at=opened_at,
    )
    run = _submit()
    services.run_step_execute(run_id=str(run.id), seq=0, chain_s=0)

    run.refresh_from_db()
    assert _trail(run) == [
        (0, "model", "tool_calls", ""),
        (1, "tool", "lookup_order", "circuit_open"),
    ]
    # circuit_open is not retried: the call is settled, and the model decides what next.
    assert (run.next_seq, run.checkpoint["pending_actions"], run.checkpoint["attempt"]) == (
        2,
        [],
        0,
    )
    action = Action.objects.get(run=run)
    assert (action.status, action.error_class) == (ActionStatus.FAILED, "circuit_open")
    told = json.loads(run.checkpoint["messages"][-1]["content"])
    assert told["error"]["class"] == "circuit_open"
    assert "temporarily switched off" in told["error"]["message"]
    breaker = CircuitBreaker.objects.get(name=tool_breaker_name("lookup_order"))
    assert (breaker.state, breaker.failure_count, breaker.opened_at) == (
        BreakerState.OPEN,
        5,
        opened_at,
    )
    assert _action_events(action) == [
        ("action.proposed", None, "proposed"),
        ("action.failed", {"status": "proposed"}, "failed"),
    ]


def test_a_read_whose_tool_says_no_is_settled_as_a_tool_error(
    shop: None, model_endpoint: Simulator
) -> None:
    """The order is gone: lookup_order raises its ToolError, which is an answer, not an outage."""
    Order.objects.filter(order_id="SO-1002").delete()
    run = _submit()
    services.run_step_execute(run_id=str(run.id), seq=0, chain_s=0)

    run.refresh_from_db()
    assert _trail(run) == [
        (0, "model", "tool_calls", ""),
        (1, "tool", "lookup_order", "tool_error"),
    ]
    action = Action.objects.get(run=run)
    assert (action.status, action.error_class) == (ActionStatus.FAILED, "tool_error")
    assert action.result == {
        "error": {
            "class": "tool_error",
            "message": "No order SO-1002 exists.",
            "details": {"code": "order_not_found", "order_id": "SO-1002"},
        }
    }
    assert json.loads(run.checkpoint["messages"][-1]["content"]) == action.result
    # A ToolError is the tool working as meant: its breaker counts no failure.
    assert not CircuitBreaker.objects.filter(
        name=tool_breaker_name("lookup_order"), failure_count__gt=0
    ).exists()


def test_a_read_that_crashes_is_recorded_as_attempt_one_and_retried_by_its_tool_step(
    shop: None, model_endpoint: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("examples.support.tools.Order", _Unreachable)
    run = _submit()
    services.run_step_execute(run_id=str(run.id), seq=0, chain_s=0)

    run.refresh_from_db()
    action = Action.objects.get(run=run)
    assert _trail(run) == [
        (0, "model", "tool_calls", ""),
        (1, "tool", "lookup_order", "tool_crashed"),
    ]
    assert (run.next_seq, run.checkpoint["pending_actions"], run.checkpoint["attempt"]) == (
        2,
        [action.pk],
        1,
    )
    assert run.enqueued_at > timezone.now()  # the retry waits for its backoff
    assert (action.status, action.step_id) == (ActionStatus.PROPOSED, None)
    assert CircuitBreaker.objects.get(name=tool_breaker_name("lookup_order")).failure_count == 1

    monkeypatch.undo()  # the shop is back: the tool step makes attempt 2
    services.run_step_execute(run_id=str(run.id), seq=2, chain_s=0)

    run.refresh_from_db()
    action.refresh_from_db()
    assert _trail(run)[1:] == [
        (1, "tool", "lookup_order", "tool_crashed"),
        (2, "tool", "lookup_order", ""),
    ]
    assert Step.objects.get(run=run, seq=2).attempt == 2
    assert (action.status, action.result["order_id"]) == (ActionStatus.SUCCEEDED, "SO-1002")
    assert run.checkpoint["pending_actions"] == []
