"""The unit of work of a step (runs.kernel.unit_of_work.StepWork): the rows it writes, and
when none.

In real transactions (``transactional_db``), as a worker's: the outermost ``atomic`` block
takes the one-round-trip path (``commit_with``), one nested in another the
statement-by-statement path; every test runs on both.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from agentdesk.statements import commit_with
from audit.log import ChainIntact, audit_chain_verify, audit_record
from audit.models import AuditEvent
from examples.support.seed import seed_shop
from runs import services
from runs.kernel import unit_of_work
from runs.kernel.stepping import STEP_FIELDS, StepRecord
from runs.kernel.unit_of_work import LeaseLost, StepWork
from runs.models import Action, ActionStatus, Run, RunState, Step, StepKind
from tests.runs.factories import seeded_ticket_input

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per transaction that ended in one round trip."""
    calls: list[int] = []

    def counted(statements: Any) -> Any:
        calls.append(1)
        return commit_with(statements)

    monkeypatch.setattr(unit_of_work, "commit_with", counted)
    return calls


@contextmanager
def _nested() -> Iterator[None]:
    with transaction.atomic(), transaction.atomic():
        yield


PATHS: dict[str, tuple[Callable[[], AbstractContextManager[Any]], int]] = {
    # The transaction's block, and how many one-round-trip commits it makes.
    "one round trip": (transaction.atomic, 1),
    "statement by statement": (_nested, 0),
}


@pytest.fixture(params=list(PATHS))
def path(request: pytest.FixtureRequest) -> tuple[Callable[[], AbstractContextManager[Any]], int]:
    return PATHS[request.param]


@pytest.fixture
def leased(transactional_db: None) -> Run:
    """A running run at step 0 whose lease is ours."""
    seed_shop()
    run, _ = services.run_submit(agent_name="support", run_input=seeded_ticket_input("T-0002"))
    Run.objects.filter(pk=run.pk).update(state=RunState.RUNNING, lease_token=uuid.uuid4())
    return Run.objects.get(pk=run.pk)


def _record(**fields: Any) -> StepRecord:
    return StepRecord(
        kind=StepKind.MODEL, state={"messages": 2}, started_at=timezone.now(), **fields
    )


def _action(run: Run, index: int, **fields: Any) -> Action:
    return Action(
        run=run,
        proposed_seq=0,
        index=index,
        tool_call_id=f"call-{index}",
        tool="lookup_order",
        raw_arguments="{}",
        arguments={},
        args_hash=f"{index:064}",
        idempotency_key=f"{run.pk}:0:{index}",
        **fields,
    )


def _ours(run: Run, lease: uuid.UUID | None) -> dict[str, Any]:
    return {"id": run.pk, "lease_token": lease, "next_seq": 0}


def _event(run: Run, verb: str) -> None:
    audit_record(
        actor=None, actor_label="worker", verb=verb, object_type="run", object_id=str(run.pk)
    )


def _verbs(run: Run) -> list[str]:
    """The run's audit events (the shop's seeding wrote others)."""
    return list(
        AuditEvent.objects.filter(object_type="run", object_id=str(run.pk))
        .order_by("seq")
        .values_list("verb", flat=True)
    )


def test_a_step_its_actions_its_audit_events_and_the_run_are_written(
    leased: Run, path: Any, sent: list[int]
) -> None:
    block, round_trips = path
    lease = leased.lease_token
    with block():
        work = StepWork(leased)
        with work.recording():
            step = work.add_step(_record(reason="why", tokens_in=12), 0)
            actions = [_action(leased, 0), _action(leased, 1, confidence=0.5)]
            work.add_actions(actions)
            # Keys at once: what names them before the commit (the checkpoint, events) can.
            assert step.pk is not None
            assert all(action.pk is not None for action in actions)
            leased.checkpoint["pending_actions"] = [action.pk for action in actions]
            _event(leased, "action.proposed")
        leased.next_seq, leased.lease_token, leased.tokens_in = 1, None, 12
        work.flush(STEP_FIELDS, _ours(leased, lease))

    assert len(sent) == round_trips
    stored = Step.objects.get(run=leased)
    assert (stored.pk, stored.seq, stored.reason, stored.tokens_in) == (step.pk, 0, "why", 12)
    assert list(
        Action.objects.filter(run=leased).order_by("index").values_list("pk", "index", "confidence")
    ) == [(actions[0].pk, 0, None), (actions[1].pk, 1, 0.5)]
    run = Run.objects.get(pk=leased.pk)
    assert (run.next_seq, run.lease_token, run.tokens_in) == (1, None, 12)
    assert run.checkpoint["pending_actions"] == [action.pk for action in actions]
    assert _verbs(leased) == ["run.submitted", "action.proposed"]
    assert isinstance(audit_chain_verify(), ChainIntact)


def test_an_action_update_is_written_as_it_was_when_added(
    leased: Run, path: Any, sent: list[int]
) -> None:
    block, _ = path
    action = _action(leased, 0)
    action.save()
    lease = leased.lease_token
    with block():
        work = StepWork(leased)
        with work.recording():
            step = work.add_step(_record(), 0)
            action.status, action.step = ActionStatus.SUCCEEDED, step
            work.update_action(action, ["status", "step"])
            action.status = ActionStatus.FAILED  # after it was added: not written
            late = _action(leased, 1)
            work.add_actions([late])
            late.tool = "changed later"  # neither
        leased.next_seq = 1
        work.flush(STEP_FIELDS, _ours(leased, lease))

    assert list(
        Action.objects.filter(run=leased).order_by("index").values_list("status", "step", "tool")
    ) == [
        (ActionStatus.SUCCEEDED, step.pk, "lookup_order"),
        (ActionStatus.PROPOSED, None, "lookup_order"),
    ]


def test_a_lost_lease_writes_nothing(leased: Run, path: Any, sent: list[int]) -> None:
    """Another worker took the run over: none of the step's rows, events or run fields."""
    block, _ = path
    other = uuid.uuid4()
    existing = _action(leased, 0)
    existing.save()
    ours = leased.lease_token
    Run.objects.filter(pk=leased.pk).update(lease_token=other)
    before = Run.objects.get(pk=leased.pk)

    def step() -> None:
        with block():
            work = StepWork(leased)
            with work.recording():
                step = work.add_step(_record(), 0)
                work.add_actions([_action(leased, 1)])
                existing.status, existing.step = ActionStatus.SUCCEEDED, step
                work.update_action(existing, ["status", "step"])
                _event(leased, "run.succeeded")
            leased.next_seq, leased.state = 1, RunState.SUCCEEDED
            work.flush(STEP_FIELDS, _ours(leased, ours))

    with pytest.raises(LeaseLost):
        step()

    assert not Step.objects.filter(run=leased).exists()
    assert list(Action.objects.filter(run=leased).values_list("index", "status", "step")) == [
        (0, ActionStatus.PROPOSED, None)
    ]
    after = Run.objects.get(pk=leased.pk)
    assert (after.next_seq, after.state, after.lease_token, after.checkpoint) == (
        before.next_seq,
        before.state,
        other,
        before.checkpoint,
    )
    assert _verbs(leased) == ["run.submitted"]


def test_an_exception_before_the_flush_writes_nothing(leased: Run, path: Any) -> None:
    block, _ = path

    def step() -> None:
        with block():
            work = StepWork(leased)
            with work.recording():
                work.add_step(_record(), 0)
                work.add_actions([_action(leased, 0)])
                _event(leased, "action.proposed")
                raise RuntimeError("the step's own bug")

    with pytest.raises(RuntimeError, match="the step's own bug"):
        step()

    assert not Step.objects.filter(run=leased).exists()
    assert not Action.objects.filter(run=leased).exists()
    assert Run.objects.get(pk=leased.pk).next_seq == 0
    assert _verbs(leased) == ["run.submitted"]


def test_a_statement_failing_in_the_flush_writes_nothing(leased: Run, path: Any) -> None:
    """The run's UPDATE ran and matched, then an INSERT fails (this step is recorded
    already): the run's row, the other rows and the events are all rolled back."""
    block, _ = path
    _record().build(leased, 0).save(force_insert=True)
    lease = leased.lease_token

    def step() -> None:
        with block():
            work = StepWork(leased)
            with work.recording():
                work.add_actions([_action(leased, 0)])
                work.add_step(_record(), 0)
                _event(leased, "action.proposed")
            leased.next_seq, leased.lease_token = 1, None
            work.flush(STEP_FIELDS, _ours(leased, lease))

    with pytest.raises(IntegrityError):
        step()

    assert Step.objects.filter(run=leased).count() == 1  # the one there before
    assert not Action.objects.filter(run=leased).exists()
    after = Run.objects.get(pk=leased.pk)
    assert (after.next_seq, after.lease_token) == (0, lease)
    assert _verbs(leased) == ["run.submitted"]
    assert isinstance(audit_chain_verify(), ChainIntact)
