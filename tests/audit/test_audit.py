"""The audit log: append-only in PostgreSQL, hash-chained, verified, and safe under concurrency."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor

from audit.log import (
    GENESIS_HASH,
    _iso,
    audit_batch,
    audit_chain_verify,
    audit_record,
    canonical_parts,
    event_hash,
    stored_hash,
)
from audit.models import AuditEvent, AuditVerb
from tests.conftest import AUDIT_TRUNCATE_TRIGGER_OFF, migrated_forward_again

TABLE = AuditEvent._meta.db_table


def _record(n: int, **extra: Any) -> list[AuditEvent]:
    events = []
    with transaction.atomic():
        for i in range(n):
            events.append(
                audit_record(
                    actor=None,
                    verb=extra.get("verb", "run.started"),
                    object_type=extra.get("object_type", "run"),
                    object_id=extra.get("object_id", f"obj-{i}"),
                    before={"state": "queued"},
                    after={"state": "running", "amount": 29.0, "n": i},
                    trace_id=extra.get("trace_id", f"{i:032x}"),
                    actor_label=extra.get("actor_label", "worker"),
                )
            )
    return events


def _verify() -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("audit_verify", stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _in_threads(count: int, writer: Callable[[int], None]) -> list[BaseException]:
    """Run ``writer(0..count-1)`` on threads released at once; the exceptions they raised."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait()
            writer(index)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
        finally:
            connections.close_all()

    pool = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return errors


# --- the chain -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_events_are_numbered_and_chained_from_the_genesis_hash() -> None:
    first, second, third = _record(3)

    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert third.prev_hash == second.hash
    stored = AuditEvent.objects.get(pk=second.pk)
    assert stored.hash == stored_hash(stored) == second.hash


@pytest.mark.django_db
def test_an_intact_chain_verifies() -> None:
    events = _record(3)

    code, out, err = _verify()

    assert code == 0
    assert out.strip() == (f"audit log intact: 3 events, last seq 3, head hash {events[-1].hash}")
    assert err == ""


@pytest.mark.django_db
def test_an_empty_log_verifies() -> None:
    assert _verify()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_audit_record_outside_a_transaction_is_refused() -> None:
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit_record(actor=None, verb="x", object_type="run", object_id="1")


# --- PostgreSQL refuses changes --------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sql",
    [
        f"UPDATE {TABLE} SET verb = 'run.forged' WHERE seq = 1",
        f"DELETE FROM {TABLE} WHERE seq = 1",
    ],
)
def test_update_and_delete_in_sql_are_refused(sql: str) -> None:
    event = _record(1)[0]

    with (
        pytest.raises(DatabaseError, match="the audit log is append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql)

    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.verb, stored.hash) == ("run.started", event.hash)


@pytest.mark.django_db
def test_truncate_is_refused() -> None:
    _record(2)
    with connection.cursor() as cursor:  # the test database turns it off for its flushes
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(AUDIT_TRUNCATE_TRIGGER_OFF.replace("DISABLE", "ENABLE"))

    with (
        pytest.raises(DatabaseError, match="TRUNCATE on agentdesk_auditevent is refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"TRUNCATE {TABLE}")

    assert AuditEvent.objects.count() == 2


@pytest.mark.django_db
def test_update_and_delete_through_the_orm_are_refused() -> None:
    event = _record(1)[0]

    def changed_and_saved() -> None:
        event.after = {"state": "succeeded"}
        event.save()

    attempts = [
        ("UPDATE", lambda: AuditEvent.objects.filter(pk=event.pk).update(verb="run.forged")),
        ("UPDATE", changed_and_saved),
        ("DELETE", lambda: AuditEvent.objects.get(pk=event.pk).delete()),
        ("DELETE", lambda: AuditEvent.objects.all().delete()),
    ]
    for operation, attempt in attempts:
        with (
            pytest.raises(DatabaseError, match=f"{operation} on agentdesk_auditevent is refused"),
            transaction.atomic(),
        ):
            attempt()

    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.verb, stored.after) == (
        "run.started",
        {"state": "running", "amount": 29, "n": 0},
    )


# --- tampering is found ----------------------------------------------------------------------


def _behind_the_triggers_back(sql: str, params: list[Any]) -> None:
    with connection.cursor() as cursor:
        # ALTER TABLE waits for no deferred foreign-key check of this transaction's inserts.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER agentdesk_auditevent_no_update_delete")
        cursor.execute(sql, params)
        cursor.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER agentdesk_auditevent_no_update_delete")


@pytest.mark.django_db
def test_a_changed_event_is_named_by_audit_verify() -> None:
    events = _record(5)
    target = events[2]
    _behind_the_triggers_back(
        f"UPDATE {TABLE} SET after = %s::jsonb WHERE id = %s",
        ['{"state": "succeeded", "amount": 29, "n": 2}', target.pk],
    )

    code, out, err = _verify()

    assert code == 1
    assert out == ""
    assert err.startswith(
        f"audit log broken at event seq 3 (id {target.pk}): content does not match"
    )
    assert "changed after it was written" in err


@pytest.mark.django_db
def test_a_rehashed_event_breaks_the_link_to_the_next_one() -> None:
    """Recomputing the changed event's own hash does not help: the next event points at the old."""
    events = _record(4)
    forged = AuditEvent.objects.get(pk=events[1].pk)
    forged.actor_label = "mallory"
    forged.hash = stored_hash(forged)
    _behind_the_triggers_back(
        f"UPDATE {TABLE} SET actor_label = %s, hash = %s WHERE id = %s",
        [forged.actor_label, forged.hash, forged.pk],
    )

    result = audit_chain_verify(batch=2)

    assert result.as_dict() == {
        "intact": False,
        "seq": 3,
        "id": events[2].pk,
        "problem": (
            f"prev_hash {events[1].hash[:12]}… is not the previous event's hash {forged.hash[:12]}…"
        ),
        "events_checked": 2,
    }


@pytest.mark.django_db
def test_a_deleted_event_is_found() -> None:
    events = _record(4)
    _behind_the_triggers_back(f"DELETE FROM {TABLE} WHERE id = %s", [events[1].pk])

    code, _, err = _verify()

    assert code == 1
    assert err.strip() == (
        f"audit log broken at event seq 3 (id {events[2].pk}): seq 3 follows 1: events are missing"
    )


# --- many writers at once --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_produce_one_unbroken_chain() -> None:
    threads, per_thread = 8, 25

    def writer(index: int) -> None:
        for i in range(per_thread):
            with transaction.atomic():
                audit_record(
                    actor=None,
                    actor_label=f"writer-{index}",
                    verb="run.started",
                    object_type="run",
                    object_id=f"{index}-{i}",
                    after={"i": i},
                )

    errors = _in_threads(threads, writer)

    assert errors == []
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(
        range(1, threads * per_thread + 1)
    )
    assert audit_chain_verify(batch=50).as_dict()["intact"] is True
    assert AuditEvent.objects.filter(actor_label="writer-3").count() == per_thread


def _event(verb: str, i: int) -> None:
    audit_record(actor=None, actor_label="worker", verb=verb, object_type="run", object_id=str(i))


@pytest.mark.django_db
def test_a_batch_is_appended_in_order_as_its_block_ends() -> None:
    with transaction.atomic():
        _event("run.submitted", 0)
        with audit_batch():
            for i, verb in enumerate(("action.proposed", "action.proposed", "run.succeeded")):
                _event(verb, i)
            assert AuditEvent.objects.count() == 1  # collected, not written yet

    assert list(AuditEvent.objects.order_by("seq").values_list("seq", "verb", "object_id")) == [
        (1, "run.submitted", "0"),
        (2, "action.proposed", "0"),
        (3, "action.proposed", "1"),
        (4, "run.succeeded", "2"),
    ]
    assert audit_chain_verify(batch=2).as_dict() == {
        "intact": True,
        "events": 4,
        "last_seq": 4,
        "head_hash": AuditEvent.objects.get(seq=4).hash,
    }


@pytest.mark.django_db
def test_a_batch_whose_block_fails_writes_nothing() -> None:
    def fails() -> None:
        with transaction.atomic(), audit_batch():
            _event("run.succeeded", 1)
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        fails()

    assert AuditEvent.objects.count() == 0


def test_a_batch_outside_a_transaction_is_refused() -> None:
    with pytest.raises(RuntimeError, match="inside the transaction"), audit_batch():
        pass


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_produce_one_unbroken_chain() -> None:
    threads, per_thread, per_batch = 6, 10, 3
    # A verb of its own for each writer, so that a batch is seen to stay together.
    verbs = list(AuditVerb)[:threads]

    def writer(index: int) -> None:
        for i in range(per_thread):
            with transaction.atomic(), audit_batch():
                for j in range(per_batch):
                    _event(verbs[index], i * per_batch + j)

    errors = _in_threads(threads, writer)

    assert errors == []
    total = threads * per_thread * per_batch
    rows = list(AuditEvent.objects.order_by("seq").values_list("seq", "verb", "object_id"))
    assert [seq for seq, _, _ in rows] == list(range(1, total + 1))
    # A batch stays together on the chain, in the order its events were recorded.
    for start_at in range(0, total, per_batch):
        batch = rows[start_at : start_at + per_batch]
        assert len({verb for _, verb, _ in batch}) == 1
        first = int(batch[0][2])
        assert [int(o) for _, _, o in batch] == [first, first + 1, first + 2]
    assert audit_chain_verify(batch=50).as_dict()["intact"] is True


# --- upgrading a database that has events from before the chain -----------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_chains_events_written_before_it() -> None:
    executor = MigrationExecutor(connection)
    before_chain = [("agentdesk", "0001_initial")]
    # Every app's leaf: migrating agentdesk back also unapplies other apps' migrations
    # that depend on it (runs' config_version), and they must come back too.
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(before_chain)
    try:
        old = MigrationExecutor(connection).loader.project_state(before_chain).apps
        OldEvent = old.get_model("agentdesk", "AuditEvent")
        for i in range(5):
            OldEvent.objects.create(
                actor_label="system",
                verb="run.submitted",
                object_type="run",
                object_id=str(i),
                before=None,
                after={"state": "queued", "cost": 1.5},
                trace_id="",
            )
    finally:
        MigrationExecutor(connection).migrate(latest)
        migrated_forward_again()

    assert list(AuditEvent.objects.order_by("seq").values_list("seq", "object_id")) == [
        (1, "0"),
        (2, "1"),
        (3, "2"),
        (4, "3"),
        (5, "4"),
    ]
    assert _verify()[0] == 0
    with transaction.atomic():
        audit_record(actor=None, verb="run.started", object_type="run", object_id="5")
    assert audit_chain_verify().as_dict()["events"] == 6


@pytest.mark.django_db
def test_time_never_goes_back_along_the_chain() -> None:
    """An event already in the chain with a later time than the clock now says (the
    database's clock stepped back, or a host's was ahead): the next one gets its time."""
    first = _record(1)[0]
    ahead = AuditEvent(
        seq=first.seq + 1,
        created_at=first.created_at + timedelta(seconds=5),
        actor_label="ahead",
        verb="clock.ahead",
        object_type="test",
        object_id="1",
        trace_id="",
        prev_hash=first.hash,
    )
    ahead.hash = stored_hash(ahead)
    ahead.save(force_insert=True)

    second = _record(1)[0]

    assert second.created_at == ahead.created_at
    assert second.prev_hash == ahead.hash
    assert audit_chain_verify().as_dict()["intact"] is True


@pytest.mark.django_db
def test_a_host_whose_clock_is_behind_writes_no_earlier_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.utils import timezone

    first = _record(1)[0]
    behind = first.created_at - timedelta(seconds=5)
    monkeypatch.setattr(timezone, "now", lambda: behind)

    second = _record(1)[0]

    assert second.created_at == first.created_at
    assert audit_chain_verify().as_dict()["intact"] is True


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, None),
        ({"state": "queued"}, {"state": "running", "n": 3, "cost": 0.25, "big": 1e20}),
        ({"ünïcode": 'Grüße, "quotes" and \\ back'}, {"nested": {"z": [1, None, True], "a": {}}}),
        ({}, {"emoji": "☕", "newline": "a\nb", "tab": "\t"}),
    ],
)
def test_the_parts_postgresql_joins_make_exactly_the_canonical_json(
    before: Any, after: Any
) -> None:
    at = datetime(2026, 12, 1, 19, 0, 0, 7, tzinfo=UTC)
    event = AuditEvent(
        actor_id=None if before is None else 42,
        actor_label="rita",
        verb="run.started",
        object_type="run",
        object_id="7c1f",
        before=before,
        after=after,
        trace_id="abc123",
    )
    parts = canonical_parts(event)
    joined = parts[0] + _iso(at) + parts[1] + "f" * 64 + parts[2] + "12345" + parts[3]

    assert hashlib.sha256(joined.encode()).hexdigest() == event_hash(
        seq=12345,
        created_at=at,
        actor_id=event.actor_id,
        actor_label="rita",
        verb="run.started",
        object_type="run",
        object_id="7c1f",
        before=before,
        after=after,
        trace_id="abc123",
        prev_hash="f" * 64,
    )
