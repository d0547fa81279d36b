"""The runtime's hottest statements, built once per model instead of on every call.

Every step inserts its Step, its actions and its audit events and updates its run. Through
the ORM each of those statements is compiled again on every call, which cost more than
PostgreSQL took to run them (measured on the project's 2-core machine: a run's UPDATE 1.0
to 1.1 ms through ``QuerySet.update``, 0.7 ms so; see docs/benchmarks.md). The INSERT,
the row read (``select_row``) and the compare-and-set UPDATE here build the SQL from the
model's metadata once and only convert the values each time, with the fields' own
``pre_save`` and ``get_db_prep_save``, as the ORM does. They are for plain concrete models
(no multi-table inheritance) and work on PostgreSQL and SQLite.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import psycopg
from django.db import connection, models

M = TypeVar("M", bound=models.Model)

# An SQL statement with %s placeholders, and its parameters.
Statement = tuple[str, list[Any]]


@cache
def _insert_sql(
    model: type[models.Model], vendor: str, rows: int, with_keys: bool = False
) -> tuple[str, tuple[Any, ...]]:
    fields = tuple(f for f in model._meta.concrete_fields if with_keys or not f.primary_key)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)}"
        f" ({', '.join(_column(f) for f in fields)})"
        f" VALUES {', '.join([one] * rows)} RETURNING {_column(model._meta.pk)}"
    )
    return sql, fields


def insert_rows_sql(objs: Sequence[models.Model]) -> Statement:
    """The INSERT of ``insert_rows``, not run: its SQL and parameters (``objs`` not empty).

    Run in ``commit_with``, the keys it returns are not read back: for rows that nothing
    refers to before the commit, or rows whose keys were allotted ahead (``allot_keys``),
    which the INSERT then sends along.
    """
    with_keys = objs[0].pk is not None  # keys allotted ahead (``allot_keys``): sent along
    if any((obj.pk is not None) != with_keys for obj in objs):
        raise ValueError("insert_rows needs rows that all have their keys, or none")
    return insert_prepared_sql([prepared_row(obj) for obj in objs])


@dataclass(frozen=True)
class PreparedRow:
    """A row's values as its INSERT sends them, taken when it was prepared (``prepared_row``)."""

    model: type[models.Model]
    with_key: bool
    params: list[Any]


def prepared_row(obj: models.Model) -> PreparedRow:
    """``obj``'s values for its INSERT, converted now: what changes on ``obj`` later is not sent.

    With its primary key if it has one (allotted ahead, ``allot_keys``). Rows of one model
    prepared apart are inserted together by ``insert_prepared_sql``.
    """
    model, with_key = type(obj), obj.pk is not None
    _, fields = _insert_sql(model, connection.vendor, 1, with_key)
    params = [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields]
    return PreparedRow(model, with_key, params)


def insert_prepared_sql(rows: Sequence[PreparedRow]) -> Statement:
    """One INSERT of ``rows`` (of one model, all with their keys or none; not empty)."""
    model, with_key = rows[0].model, rows[0].with_key
    if any(row.model is not model or row.with_key != with_key for row in rows):
        raise ValueError("one INSERT takes rows of one model that all have their keys, or none")
    sql, _ = _insert_sql(model, connection.vendor, len(rows), with_key)
    return sql, [param for row in rows for param in row.params]


# Keys allotted ahead, per model: (the process that fetched them, those not given out yet).
_free_keys: dict[type[models.Model], tuple[int, list[int]]] = {}
_free_keys_lock = threading.Lock()
KEYS_PER_FETCH = 100


def allot_keys(objs: Sequence[models.Model]) -> bool:
    """Give ``objs`` primary keys from their table's sequence now, ahead of their INSERT.

    So that rows whose keys are needed before they are written (a step's actions: the
    checkpoint and the audit events name them) can still be inserted with a transaction's
    last statements (``commit_with``), in its one round trip. The keys come from the same
    sequence the table's inserts use, fetched a hundred at a time per process and given
    out under a lock, so no key is ever given twice; a process forked after a fetch
    starts afresh. Keys given out but never inserted (a step that fails) are a gap, as a
    rolled-back INSERT leaves one. Only on PostgreSQL: elsewhere returns False and the
    rows keep no key, for ``insert_rows`` to read back.
    """
    if connection.vendor != "postgresql" or not objs:
        return False
    model, pid, count = type(objs[0]), os.getpid(), len(objs)
    with _free_keys_lock:
        fetched_by, free = _free_keys.get(model, (pid, []))
        keys = free[:count] if fetched_by == pid and len(free) >= count else None
        if keys is not None:
            _free_keys[model] = (pid, free[count:])
    if keys is None:
        # Fetched outside the lock: a thread waiting for a connection of the pool must not
        # hold up the threads that only need keys already fetched.
        fetched = _next_keys(model, max(KEYS_PER_FETCH, count))
        keys = fetched[:count]
        with _free_keys_lock:
            fetched_by, free = _free_keys.get(model, (pid, []))
            _free_keys[model] = (pid, (free if fetched_by == pid else []) + fetched[count:])
    for obj, key in zip(objs, keys, strict=True):
        obj.pk = key
    return True


def _next_keys(model: type[models.Model], count: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [model._meta.db_table, model._meta.pk.column, count],
        )
        return [key for (key,) in cursor.fetchall()]


def insert_rows(objs: Sequence[models.Model]) -> None:
    """INSERT ``objs`` (instances of one model) in one statement and set their primary keys."""
    if not objs:
        return
    sql, params = insert_rows_sql(objs)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        keys = cursor.fetchall()
    # PostgreSQL and SQLite return the rows of a multi-row INSERT in the order of VALUES.
    for obj, (key,) in zip(objs, keys, strict=True):
        obj.pk = key
        obj._state.adding = False
        obj._state.db = "default"


@cache
def _select_sql(
    model: type[models.Model], vendor: str, where: tuple[str, ...], for_update: bool
) -> tuple[str, tuple[Any, ...]]:
    meta = model._meta
    conditions = tuple(_concrete(meta.get_field(name)) for name in where)
    sql = (
        f"SELECT {', '.join(_column(f) for f in meta.concrete_fields)}"
        f" FROM {connection.ops.quote_name(meta.db_table)} WHERE "
        + " AND ".join(f"{_column(f)} = %s" for f in conditions)
        + (" FOR UPDATE" if for_update and connection.features.has_select_for_update else "")
    )
    return sql, conditions


def select_row(model: type[M], *, for_update: bool = False, **where: Any) -> M | None:
    """The row of ``model`` whose fields equal ``where``, or None; ``FOR UPDATE`` locks it.

    Through ``Model.objects.raw`` (the fields' own converters, as the ORM's), on a statement
    built once: 0.6 ms of CPU to lock and read a run, against 1.1 ms through
    ``select_for_update().filter(pk=...).first()``, whose query is compiled every time
    (docs/benchmarks.md). ``where`` names fields or their columns' attributes (``run_id``).
    """
    sql, conditions = _select_sql(model, connection.vendor, tuple(where), for_update)
    params = []
    for field in conditions:
        value = where[field.name if field.name in where else field.attname]
        if value is None:
            raise ValueError(f"select_row cannot compare {field.name} with None")
        params.append(field.get_db_prep_value(value, connection))
    return next(iter(model._default_manager.raw(sql, params)), None)


@cache
def _update_sql(
    model: type[models.Model], vendor: str, columns: tuple[str, ...], where: tuple[str, ...]
) -> tuple[str, tuple[Any, ...], tuple[Any, ...]]:
    meta = model._meta
    sets = tuple(_concrete(meta.get_field(name)) for name in columns)
    conditions = tuple(_concrete(meta.get_field(name)) for name in where)
    sql = (
        f"UPDATE {connection.ops.quote_name(meta.db_table)} SET "
        + ", ".join(f"{_column(f)} = %s" for f in sets)
        + " WHERE "
        + " AND ".join(f"{_column(f)} = %s" for f in conditions)
    )
    return sql, sets, conditions


def _concrete(field: Any) -> models.Field[Any, Any]:
    if not getattr(field, "concrete", False):
        raise ValueError(f"{field} is not a column of its table")
    return field


def _column(field: Any) -> str:
    """The field's column, quoted."""
    assert field.column is not None, field
    return connection.ops.quote_name(field.column)


def update_row_if_sql(obj: models.Model, columns: Sequence[str], **where: Any) -> Statement:
    """The UPDATE of ``update_row_if``, not run: its SQL and parameters."""
    sql, sets, conditions = _update_sql(type(obj), connection.vendor, tuple(columns), tuple(where))
    params = [f.get_db_prep_save(getattr(obj, f.attname), connection) for f in sets]
    for field in conditions:
        value = where[field.name]
        if value is None:
            raise ValueError(f"update_row_if cannot compare {field.name} with None")
        params.append(field.get_db_prep_value(value, connection))
    return sql, params


def update_row_if(obj: models.Model, columns: Sequence[str], **where: Any) -> int:
    """UPDATE ``columns`` of ``obj``'s row from ``obj``, where its fields equal ``where``.

    A compare-and-set: returns how many rows matched (0 or 1). ``where`` names fields of the
    model (its primary key among them); None values are not supported there.
    """
    sql, params = update_row_if_sql(obj, columns, **where)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def can_commit_with_statements() -> bool:
    """Whether ``commit_with`` may end the current transaction here.

    Only on PostgreSQL, and only in an outermost ``transaction.atomic`` block: inside a
    nested one (a savepoint; tests run so) a COMMIT would end the enclosing transaction.
    """
    return connection.vendor == "postgresql" and len(connection.atomic_blocks) == 1


def commit_with(statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
    """Run ``statements``, then COMMIT, in one round trip; return each statement's rows.

    For the last writes of a short transaction that holds a lock other transactions queue
    for (the audit chain's): sent as one query string with the COMMIT, so the lock is
    released as soon as PostgreSQL is done, never after a wait for this process to be
    scheduled again to send the COMMIT (with a hundred threads per process, a wait for the
    GIL; see docs/benchmarks.md). The parameters are bound on the client (a multi-statement
    query string needs the simple query protocol). An error in any statement aborts the
    transaction: what ran is rolled back, the rest and the COMMIT are skipped, and the error
    is raised as Django's.

    Call it as the very last thing inside an outermost ``transaction.atomic`` block
    (``can_commit_with_statements``); the block's exit then finds nothing to commit (psycopg
    sends no second COMMIT) and runs its on-commit callbacks as usual.
    """
    if not can_commit_with_statements():
        raise RuntimeError("commit_with must end an outermost transaction on PostgreSQL")
    sql = "; ".join([text for text, _ in statements] + ["COMMIT"])
    params = [param for _, values in statements for param in values]
    raw = psycopg.ClientCursor(connection.connection)
    # Wrapped as Django wraps its own cursors: its exceptions, and the query log in DEBUG.
    # (The stubs type the argument as a wrapper already; Django passes raw cursors.)
    wrap = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
    rows: list[list[tuple[Any, ...]]] = []
    with wrap(raw) as cursor:  # type: ignore[arg-type]
        cursor.execute(sql, params)
        for _ in statements:
            rows.append(cursor.fetchall() if cursor.description else [])
            cursor.nextset()
    return rows
