"""A step's commit (and the claim that starts a run) as a worker makes it: its last writes
and its COMMIT in one round trip.

In a worker the commit is the outermost transaction, so the compare-and-set UPDATE of the
run, the step's rows, the audit append and the COMMIT go to PostgreSQL as one query string
(runs.kernel.unit_of_work.StepWork.flush, agentdesk.statements.commit_with). Tests with the ``db``
fixture run inside a transaction of their own and take the statement-by-statement path;
these run in real transactions (``transactional_db``), as workers do. They assert the rows
written (tests/runs/test_unit_of_work.py has the unit of work's own).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from agentdesk.statements import commit_with
from audit.log import ChainIntact, audit_chain_verify
from audit.models import AuditEvent
from examples.support.seed import seed_shop
from runs import services
from runs.kernel import stepping, unit_of_work
from runs.models import Action, DeadLetter, Run, RunState, Step
from tests.processes import Simulator
from tests.runs.factories import seeded_ticket_input

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shop(transactional_db: None) -> None:
    seed_shop()


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per transaction that ended in one round trip (so a test knows it took that
    path), whatever it sent."""
    sent: list[int] = []

    def counted(statements: Any) -> Any:
        sent.append(1)
        return commit_with(statements)

    monkeypatch.setattr(unit_of_work, "commit_with", counted)
    return sent


def _submit() -> Run:
    run, _ = services.run_submit(agent_name="support", run_input=seeded_ticket_input("T-0002"))
    return run


def test_a_run_committed_step_by_step_in_one_round_trip_each_keeps_an_intact_chain(
    shop: None, model_endpoint: Simulator, commits: list[int]
) -> None:
    run = _submit()
    services.run_step_execute(run_id=str(run.id), seq=0, chain_s=30)

    run.refresh_from_db()
    assert run.state == RunState.SUCCEEDED
    steps = Step.objects.filter(run=run).count()
    assert steps == run.next_seq == 9  # 5 model steps, 2 reads within them, 2 writes
    assert list(Step.objects.filter(run=run).values_list("seq", "kind")) == [
        (0, "model"), (1, "tool"), (2, "model"), (3, "tool"), (4, "model"),
        (5, "tool"), (6, "model"), (7, "tool"), (8, "model"),
    ]  # fmt: skip
    # The claim that started the run, then one commit per model step (its inline reads
    # recorded with it) and one per write's tool step, each in one round trip.
    assert len(commits) == 1 + 5 + 2
    actions = list(
        Action.objects.filter(run=run)
        .order_by("proposed_seq", "index")
        .values_list("proposed_seq", "step__seq", "status")
    )
    assert actions == [
        (0, 1, "succeeded"), (2, 3, "succeeded"), (4, 5, "succeeded"), (6, 7, "succeeded"),
    ]  # fmt: skip
    assert run.checkpoint["pending_actions"] == []
    verdict = audit_chain_verify()
    assert isinstance(verdict, ChainIntact)
    assert verdict.events == AuditEvent.objects.count()
    assert list(
        AuditEvent.objects.filter(object_type="run", object_id=str(run.id))
        .order_by("seq")
        .values_list("verb", flat=True)
    ) == ["run.submitted", "run.started", "run.succeeded"]
    assert run.lease_token is None


def test_a_lost_lease_aborts_the_commit_before_its_commit_and_records_nothing(
    shop: None, model_endpoint: Simulator, commits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _submit()
    other = uuid.uuid4()
    step = services._step

    def taken_over_while_working(claimed: Run, seq: int) -> None:
        Run.objects.filter(pk=claimed.pk).update(lease_token=other)
        step(claimed, seq)

    monkeypatch.setattr(services, "_step", taken_over_while_working)
    services.run_step_execute(run_id=str(run.id), seq=0, chain_s=30)

    run.refresh_from_db()
    # The claim's; the step's (its UPDATE refused by runs_lease_held: its Step and actions
    # never inserted)
    assert len(commits) == 2
    assert (run.next_seq, run.lease_token, run.state) == (0, other, RunState.RUNNING)
    assert not Step.objects.filter(run=run).exists()
    assert not Action.objects.filter(run=run).exists()
    assert list(
        AuditEvent.objects.filter(trace_id=run.trace_id)
        .order_by("seq")
        .values_list("verb", flat=True)
    ) == [
        "run.submitted",
        "run.started",  # the claim's; the step's own events went with its transaction
    ]
    assert isinstance(audit_chain_verify(), ChainIntact)


def test_a_failure_in_the_last_statements_undoes_the_whole_step(
    shop: None, model_endpoint: Simulator, commits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's UPDATE ran, the append fails: nothing of the step stays, the run is
    dead-lettered as a crash (in a transaction of its own, with its audit event)."""
    run = _submit()
    step = services._step

    def failing_append_once_claimed(claimed: Run, seq: int) -> None:
        monkeypatch.setattr(
            unit_of_work, "audit_append_statement", lambda events: ("SELECT 1/0", [])
        )
        step(claimed, seq)

    monkeypatch.setattr(services, "_step", failing_append_once_claimed)
    services.run_step_execute(run_id=str(run.id), seq=0, chain_s=30)

    run.refresh_from_db()
    assert len(commits) == 2  # the claim's; the step's, which failed
    assert run.state == RunState.DEAD_LETTERED
    assert run.error["class"] == "internal_error"
    assert run.error["message"] == "step 0 raised DataError: division by zero"
    assert run.next_seq == 0  # the requeued run takes step 0 again
    assert run.checkpoint["messages"][-1]["role"] == "user"  # the reply was not kept
    assert not Step.objects.filter(run=run).exists()
    assert not Action.objects.filter(run=run).exists()
    assert DeadLetter.objects.get(run=run).seq == 0
    assert list(
        AuditEvent.objects.filter(object_type="run", object_id=str(run.id))
        .order_by("seq")
        .values_list("verb", flat=True)
    ) == ["run.submitted", "run.started", "run.dead_lettered"]
    assert isinstance(audit_chain_verify(), ChainIntact)


def test_two_workers_claiming_a_queued_run_at_once_start_it_once(
    shop: None, commits: list[int]
) -> None:
    """Both lock the row in turn: the first starts the run (one run.started event, in one
    round trip with its UPDATE and COMMIT); the second finds the step held and leaves."""
    import threading

    from django.db import connection

    run = _submit()
    barrier = threading.Barrier(2)
    claimed: list[Run | None] = []

    def worker() -> None:
        try:
            barrier.wait()
            claimed.append(stepping.claim(str(run.id), 0))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [c for c in claimed if c is not None]
    assert len(claimed) == 2
    assert len(winners) == 1
    assert len(commits) == 1  # only the winner wrote
    run.refresh_from_db()
    assert (run.state, run.lease_token, run.step_attempts) == (
        RunState.RUNNING,
        winners[0].lease_token,
        1,
    )
    assert list(
        AuditEvent.objects.filter(object_type="run", object_id=str(run.id))
        .order_by("seq")
        .values_list("verb", flat=True)
    ) == ["run.submitted", "run.started"]


def test_the_first_claim_locks_the_row_at_once_and_a_later_one_needs_no_lock(
    shop: None, commits: list[int]
) -> None:
    """Step 0 of a queued run: SELECT ... FOR UPDATE, then its writes and COMMIT (no
    compare-and-set UPDATE first, which could not match a queued run). Step 1 of a running
    run: the compare-and-set UPDATE and the SELECT of the run, no lock."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    run = _submit()
    with CaptureQueriesContext(connection) as first:
        claimed = stepping.claim(str(run.id), 0)
    assert claimed is not None
    assert claimed.state == RunState.RUNNING
    verbs = [q["sql"].split()[0] for q in first.captured_queries]
    assert verbs == ["BEGIN", "SELECT", "WITH", "COMMIT"], verbs  # lock; the one round trip
    assert first.captured_queries[1]["sql"].endswith("FOR UPDATE")
    assert len(commits) == 1

    Run.objects.filter(pk=run.pk).update(next_seq=1, lease_token=None, lease_expires_at=None)
    with CaptureQueriesContext(connection) as later:
        assert stepping.claim(str(run.id), 1) is not None
    assert [q["sql"].split()[0] for q in later.captured_queries] == ["UPDATE", "SELECT"]
    assert len(commits) == 1  # no transaction of its own
