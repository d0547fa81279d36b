"""The runtime's prebuilt INSERT and compare-and-set UPDATE store what the ORM would."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from agentdesk.statements import (
    Statement,
    allot_keys,
    can_commit_with_statements,
    commit_with,
    insert_rows,
    select_row,
    update_row_if,
)
from runs.models import Action, Run, Step, StepKind, StepStatus

pytestmark = pytest.mark.django_db

AT = datetime(2026, 12, 1, 18, 0, 0, 123456, tzinfo=UTC)


def _run() -> Run:
    return Run.objects.create(
        agent_name="support",
        input={"ticket_id": "T-1"},
        trace_id=uuid.uuid4().hex,
        checkpoint={"messages": [], "pending_actions": []},
    )


def _step(run: Run, seq: int, **fields: object) -> Step:
    fields.setdefault("kind", StepKind.MODEL)
    return Step(
        run=run,
        seq=seq,
        state={"messages": 2, "last_content": 'Grüße, ünïcode and "quotes"'},
        action={"type": "tool_calls", "calls": [{"tool": "lookup_order", "arguments": {}}]},
        outcome={"finish_reason": "tool_calls", "nested": {"list": [1, 2.5, None, True]}},
        confidence=0.75,
        cost_usd=Decimal("0.000123"),
        started_at=AT - timedelta(milliseconds=5),
        finished_at=AT,
        **fields,
    )


def test_inserted_rows_read_back_as_the_orm_stores_them_with_their_keys_in_order() -> None:
    run = _run()
    rows = [_step(run, 0), _step(run, 1, kind=StepKind.TOOL, status=StepStatus.ERROR)]
    by_orm = _step(run, 2)
    by_orm.save()

    insert_rows(rows)

    assert [r.pk for r in rows] == list(
        Step.objects.filter(run=run, seq__lt=2).order_by("seq").values_list("pk", flat=True)
    )
    fields = [f.attname for f in Step._meta.concrete_fields if f.attname not in ("id", "seq")]
    stored = Step.objects.get(pk=rows[0].pk)
    reference = Step.objects.get(pk=by_orm.pk)
    assert {f: getattr(stored, f) for f in fields} == {f: getattr(reference, f) for f in fields}
    assert Step.objects.get(pk=rows[1].pk).status == StepStatus.ERROR
    assert rows[0]._state.adding is False


def test_nothing_to_insert_is_no_statement(django_assert_num_queries: object) -> None:
    with django_assert_num_queries(0):  # type: ignore[operator]
        insert_rows([])


def test_the_update_writes_only_where_every_condition_holds() -> None:
    run = _run()
    lease = uuid.uuid4()
    Run.objects.filter(pk=run.pk).update(lease_token=lease, next_seq=3)
    run.refresh_from_db()
    run.checkpoint = {"messages": [{"role": "user", "content": "x"}], "pending_actions": [7]}
    run.tokens_in = 12

    assert (
        update_row_if(
            run, ["checkpoint", "tokens_in"], id=run.pk, lease_token=uuid.uuid4(), next_seq=3
        )
        == 0
    )
    assert (
        update_row_if(run, ["checkpoint", "tokens_in"], id=run.pk, lease_token=lease, next_seq=2)
        == 0
    )
    assert Run.objects.get(pk=run.pk).tokens_in == 0

    assert (
        update_row_if(run, ["checkpoint", "tokens_in"], id=run.pk, lease_token=lease, next_seq=3)
        == 1
    )
    stored = Run.objects.get(pk=run.pk)
    assert (stored.checkpoint, stored.tokens_in) == (run.checkpoint, 12)


def test_a_condition_on_none_is_refused_rather_than_never_matching() -> None:
    run = _run()
    with pytest.raises(ValueError, match="cannot compare lease_token with None"):
        update_row_if(run, ["tokens_in"], id=run.pk, lease_token=None)


# --- commit_with: the last statements of a transaction and its COMMIT, in one round trip ---


def _in_other_connection(sql: str, params: list[object]) -> list[tuple[object, ...]]:
    """What a second session sees, committed only."""
    import psycopg
    from django.db import connection

    settings = connection.get_connection_params()
    settings.pop("cursor_factory", None)
    settings.pop("context", None)
    with psycopg.connect(**settings, autocommit=True) as other:
        return other.execute(sql, params).fetchall()


@pytest.mark.django_db(transaction=True)
def test_commit_with_runs_each_statement_returns_its_rows_and_commits() -> None:
    from django.db import transaction

    run = _run()
    run.state = "running"
    with transaction.atomic():
        _step(run, 0).save()
        rows = commit_with(
            [
                ("UPDATE runs_run SET state = %s WHERE id = %s", ["running", run.pk]),
                ("SELECT seq, kind FROM runs_step WHERE run_id = %s", [run.pk]),
                ("SELECT %s::jsonb", [Jsonb({"grüße": ["'; DROP TABLE x; --", None]})]),
            ]
        )
    # As from any of Django's cursors, jsonb comes back as text for the field to parse.
    assert rows[:2] == [[], [(0, "model")]]
    assert json.loads(rows[2][0][0]) == {"grüße": ["'; DROP TABLE x; --", None]}
    assert _in_other_connection("SELECT state FROM runs_run WHERE id = %s", [run.pk]) == [
        ("running",)
    ]
    assert _in_other_connection("SELECT count(*) FROM runs_step WHERE run_id = %s", [run.pk]) == [
        (1,)
    ]


@pytest.mark.django_db(transaction=True)
def test_commit_with_an_error_rolls_back_the_whole_transaction_and_commits_nothing() -> None:
    from django.db import DataError, transaction

    run = _run()
    statements: list[Statement] = [
        ("UPDATE runs_run SET state = %s WHERE id = %s", ["failed", run.pk]),
        ("SELECT 1 / %s", [0]),  # division by zero
        ("UPDATE runs_run SET model = %s WHERE id = %s", ["never", run.pk]),
    ]
    with transaction.atomic():
        _step(run, 0).save()
        with pytest.raises(DataError):
            commit_with(statements)
    assert _in_other_connection("SELECT state, model FROM runs_run WHERE id = %s", [run.pk]) == [
        ("queued", "")
    ]
    assert not Step.objects.filter(run=run).exists()


def test_commit_with_refuses_to_end_a_transaction_it_is_nested_in() -> None:
    """Inside a savepoint (as every test with the ``db`` fixture is), a COMMIT would end the
    enclosing transaction: refused before anything is sent."""
    from django.db import transaction

    run = _run()
    with transaction.atomic():
        assert can_commit_with_statements() is False
        with pytest.raises(RuntimeError, match="outermost transaction"):
            commit_with([("UPDATE runs_run SET state = %s WHERE id = %s", ["failed", run.pk])])
    run.refresh_from_db()
    assert run.state == "queued"


@pytest.mark.django_db(transaction=True)
def test_commit_with_shows_in_the_query_log_as_one_query() -> None:
    """With the query log on (DEBUG, CaptureQueriesContext), the string sent is logged once."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    run = _run()
    with CaptureQueriesContext(connection) as log, transaction.atomic():
        Run.objects.filter(pk=run.pk).update(model="first")
        commit_with([("UPDATE runs_run SET state = %s WHERE id = %s", ["failed", run.pk])])
        # Committed: the block's own commit on leaving finds no transaction open.
        assert connection.connection.info.transaction_status == TransactionStatus.IDLE
    assert [q["sql"] for q in log.captured_queries][-2:] == [
        f"UPDATE runs_run SET state = 'failed' WHERE id = '{run.pk.hex}'::uuid; COMMIT",
        "COMMIT",  # Django logs its commit; psycopg sends nothing when no transaction is open
    ]
    run.refresh_from_db()
    assert (run.state, run.model) == ("failed", "first")


def test_select_row_reads_a_row_as_the_orm_does() -> None:
    run = _run()
    Run.objects.filter(pk=run.pk).update(cost_usd=Decimal("0.012345"), started_at=AT)
    _step(run, 0).save()
    expected = Run.objects.get(pk=run.pk)

    found = select_row(Run, id=str(run.pk))

    assert found is not None
    assert found._state.adding is False
    assert {f.attname: getattr(found, f.attname) for f in Run._meta.concrete_fields} == {
        f.attname: getattr(expected, f.attname) for f in Run._meta.concrete_fields
    }
    assert (found.cost_usd, found.started_at, found.checkpoint) == (
        Decimal("0.012345"),
        AT,
        {"messages": [], "pending_actions": []},
    )
    step = select_row(Step, run_id=run.pk, seq=0)  # a foreign key by its column's attribute
    assert step is not None
    assert (step.run_id, step.seq, step.kind) == (run.pk, 0, StepKind.MODEL)


def test_select_row_finds_nothing_and_refuses_none() -> None:
    run = _run()
    assert select_row(Run, id=uuid.uuid4()) is None
    assert select_row(Step, run_id=run.pk, seq=0) is None
    with pytest.raises(ValueError, match="cannot compare started_at with None"):
        select_row(Run, started_at=None)


@pytest.mark.django_db(transaction=True)
def test_select_row_for_update_locks_the_row_until_the_transaction_ends() -> None:
    from django.db import transaction

    run = _run()
    with transaction.atomic():
        assert select_row(Run, id=run.pk, for_update=True) is not None
        # Another session may read the row but not lock it meanwhile.
        assert _in_other_connection("SELECT state FROM runs_run WHERE id = %s", [run.pk]) == [
            ("queued",)
        ]
        with pytest.raises(psycopg.errors.LockNotAvailable):
            _in_other_connection("SELECT 1 FROM runs_run WHERE id = %s FOR UPDATE NOWAIT", [run.pk])
    assert _in_other_connection(
        "SELECT 1 FROM runs_run WHERE id = %s FOR UPDATE NOWAIT", [run.pk]
    ) == [(1,)]


# --- allot_keys: keys from the table's sequence ahead of the INSERT ---------------------------


def _action(run: Run, index: int) -> Action:
    return Action(
        run=run,
        proposed_seq=0,
        index=index,
        tool_call_id=f"call_{index}",
        tool="lookup_order",
        raw_arguments="{}",
        arguments={},
        args_hash="h",
        idempotency_key=f"{run.pk}:0:{index}",
    )


@pytest.mark.django_db(transaction=True)
def test_allotted_keys_are_unique_across_threads_and_inserted_as_given() -> None:
    import threading

    from django.db import connection

    run = _run()
    taken: list[int] = []

    def allot() -> None:
        try:
            for _ in range(30):
                objs = [_action(run, 0), _action(run, 1), _action(run, 2)]
                assert allot_keys(objs) is True
                taken.extend(obj.pk for obj in objs)
        finally:
            connection.close()

    threads = [threading.Thread(target=allot) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == len(set(taken)) == 360  # 4 threads x 30 x 3, more than one fetch

    actions = [_action(run, index) for index in range(3)]
    allot_keys(actions)
    keys = [action.pk for action in actions]
    insert_rows(actions)
    assert [action.pk for action in actions] == keys
    assert list(Action.objects.filter(run=run).order_by("index").values_list("pk", flat=True)) == (
        keys
    )
    # The table's own inserts draw from the same sequence: never a key given out before.
    later = _action(run, 3)
    later.save()
    assert later.pk > max(taken + keys)


def test_rows_with_and_without_keys_cannot_be_mixed() -> None:
    run = _run()
    keyed, unkeyed = _action(run, 0), _action(run, 1)
    allot_keys([keyed])
    with pytest.raises(ValueError, match="all have their keys, or none"):
        insert_rows([keyed, unkeyed])
    assert not Action.objects.filter(run=run).exists()


def test_a_forked_process_never_gives_out_its_parents_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A child of a fork inherits the parent's unused keys; it must fetch its own."""
    import os

    from agentdesk import statements

    monkeypatch.setattr(statements, "_free_keys", {})
    run = _run()
    first = [_action(run, 0)]
    allot_keys(first)  # the first of a fresh block: the parent holds the other 99
    parent = os.getpid()
    monkeypatch.setattr(statements.os, "getpid", lambda: parent + 1)  # as in the child
    child = [_action(run, 1)]
    allot_keys(child)

    # Past the parent's whole block (first + 1 to first + 99 are the parent's to give).
    assert child[0].pk >= first[0].pk + statements.KEYS_PER_FETCH


@pytest.mark.django_db(transaction=True)
def test_a_thread_fetching_keys_does_not_hold_up_one_taking_fetched_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fetch (a connection from the pool, a round trip) happens outside the lock."""
    import threading

    from django.db import connection

    from agentdesk import statements

    monkeypatch.setattr(statements, "_free_keys", {})
    run = _run()
    first = [_action(run, 0)]
    allot_keys(first)  # 99 keys left over for this process
    fetching, release = threading.Event(), threading.Event()
    fetch = statements._next_keys

    def slow_fetch(model: Any, count: int) -> list[int]:
        fetching.set()
        release.wait(timeout=10)
        return fetch(model, count)

    monkeypatch.setattr(statements, "_next_keys", slow_fetch)
    big = [_action(run, index) for index in range(1, 151)]  # more than are left: a fetch

    def allot_big() -> None:
        try:
            allot_keys(big)
        finally:
            connection.close()

    thread = threading.Thread(target=allot_big)
    thread.start()
    assert fetching.wait(timeout=10)
    small = [_action(run, 151)]
    allot_keys(small)  # served from the 99 while the other thread is still fetching
    assert small[0].pk == first[0].pk + 1
    release.set()
    thread.join()

    keys = [obj.pk for obj in [*first, *big, *small]]
    assert len(set(keys)) == 152
