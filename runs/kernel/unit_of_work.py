"""A step's unit of work: what the step records, and how it reaches the database.

The step kernel's domain code (runs.kernel.model_step, runs.kernel.tool_step) says what a
step records: its Step rows (``add_step``), the actions it proposes (``add_actions``), the
actions it settles (``update_action``), the run's new state (the fields it sets on ``run``) and its
audit events (``audit_record`` inside ``recording``, which the transitions of a run
write too). How that is sent is this object's alone:

1. **Keys ahead.** A row added gets its primary key at once, for what names it before the
   commit (an action's step, the checkpoint's pending actions, the audit events). On
   PostgreSQL the key is taken from the table's own sequence, a hundred per fetch per
   process (``agentdesk.statements.allot_keys``), and the row waits for the last round
   trip; elsewhere (SQLite, the embedded mode, which has no sequences and no round trips)
   it is inserted there and then, its key read back.
2. **Values taken when added.** A row or an update is converted for its statement when it
   is added: what changes on the object afterwards is not written, on any database.
3. **One round trip at the end.** ``flush`` writes the run's row last, as a compare-and-set
   on the caller's condition (a step's lease), then the action updates, the inserts (one
   INSERT per model) and the audit append, in that order: every row lock is taken before
   the audit chain's lock, which every step of every run waits for. On PostgreSQL in an
   outermost transaction (a worker's) all of it and the COMMIT go as one query string
   (``agentdesk.statements.commit_with``): the chain's lock is held only while PostgreSQL
   works, never while this thread waits for the GIL to send its COMMIT. The run's UPDATE is
   wrapped in ``runs_lease_held`` (migration runs/0007), which raises SQLSTATE ``AD409``
   when it matched no row, so a lost lease aborts the transaction before its COMMIT runs.
   Elsewhere (SQLite, a transaction nested in a test's) the same statements go one by one
   in the same order, and the enclosing block commits.

``LeaseLost`` is raised when the run's row did not match: the caller's transaction rolls
back, and nothing the step added is kept (the rows inserted at once on SQLite included).
Writes that other services make inside the step's transaction (an approval request opened,
a dead letter) go their own way, before ``flush``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from django.db import DatabaseError, connection, models

from agentdesk.statements import (
    PreparedRow,
    Statement,
    allot_keys,
    can_commit_with_statements,
    commit_with,
    insert_prepared_sql,
    insert_rows,
    prepared_row,
    update_row_if,
    update_row_if_sql,
)
from audit.log import audit_append, audit_append_statement, audit_appended, audit_batch
from runs.models import Action, Run, Step

if TYPE_CHECKING:
    from audit.models import AuditEvent


class StepRow(Protocol):
    """What builds a step's row (runs.kernel.stepping.StepRecord): named here, not imported,
    so the unit of work stays below the kernel that uses it."""

    def build(self, run: Run, seq: int) -> Step: ...


# SQLSTATE of ``runs_lease_held`` (migration runs/0007): the compare-and-set matched no row.
LEASE_LOST_SQLSTATE = "AD409"


class LeaseLost(Exception):
    """The run's row did not match ``flush``'s condition: the transaction must roll back."""


class StepWork:
    """What one step records in its transaction, sent with the transaction's last writes.

    Made, filled and flushed inside one ``transaction.atomic`` block
    (runs.kernel.stepping.commit, the claim that starts a run); see the module's docstring
    for how it is sent.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self._inserts: list[PreparedRow] = []
        self._updates: list[Statement] = []
        self._events: list[AuditEvent] = []

    # --- what a step records ----------------------------------------------------------------

    def add_step(self, record: StepRow, seq: int) -> Step:
        """The run's step ``seq`` from ``record`` (redacted), with its key; written at the end."""
        step = record.build(self.run, seq)
        self._add([step])
        return step

    def add_actions(self, actions: Sequence[Action]) -> None:
        """Proposed calls, given their keys now; written at the end, as they are now."""
        self._add(actions)

    def update_action(self, action: Action, fields: Iterable[str]) -> None:
        """Write ``fields`` of an existing action, as they are on ``action`` now, at the end."""
        self._updates.append(update_row_if_sql(action, list(fields), id=action.pk))

    @contextmanager
    def recording(self) -> Iterator[StepWork]:
        """Collect the audit events recorded in this block, for ``flush`` to append.

        Any ``audit_record`` inside (an action's, a run's change of state) joins the step's
        work, so the chain's lock is taken in the transaction's last round trip only.
        """
        with audit_batch(append=False) as events:
            self._events = events
            yield self

    def _add(self, rows: Sequence[models.Model]) -> None:
        new = [row for row in rows if row.pk is None]
        if new and not allot_keys(new):
            insert_rows(new)  # no sequences to take keys from: inserted now, keys read back
            inserted = {id(row) for row in new}
            rows = [row for row in rows if id(row) not in inserted]
        self._inserts += [prepared_row(row) for row in rows]

    # --- how it is sent ---------------------------------------------------------------------

    def flush(self, columns: Sequence[str], where: dict[str, Any]) -> None:
        """The transaction's last writes: ``columns`` of the run where its row matches ``where``.

        Then the action updates, the rows added, the audit events. ``LeaseLost`` when the
        run's row did not match; on PostgreSQL in an outermost transaction, everything
        goes with the COMMIT in one round trip.
        """
        inserts = [insert_prepared_sql(group) for group in _by_model(self._inserts)]
        events = self._events
        if not can_commit_with_statements():
            if update_row_if(self.run, columns, **where) != 1:
                raise LeaseLost
            for sql, params in [*self._updates, *inserts]:
                _execute(sql, params)
            if events:
                audit_append(events)
            return
        cas_sql, cas_params = update_row_if_sql(self.run, columns, **where)
        statements = [
            (
                f"WITH ours AS ({cas_sql} RETURNING 1) SELECT runs_lease_held(count(*)) FROM ours",
                cas_params,
            ),
            *self._updates,
            *inserts,
        ]
        if events:
            statements.append(audit_append_statement(events))
        try:
            rows = commit_with(statements)
        except DatabaseError as exc:
            if getattr(exc.__cause__, "sqlstate", None) == LEASE_LOST_SQLSTATE:
                raise LeaseLost from None
            raise
        if events:
            audit_appended(events, rows[-1])


def _by_model(rows: list[PreparedRow]) -> list[list[PreparedRow]]:
    """Rows grouped per model (and per whether they carry their keys), in first-seen order."""
    groups: dict[tuple[type[models.Model], bool], list[PreparedRow]] = {}
    for row in rows:
        groups.setdefault((row.model, row.with_key), []).append(row)
    return list(groups.values())


def _execute(sql: str, params: list[Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
