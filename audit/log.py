"""Writing audit events, and the hash chain that makes tampering detectable.

Call ``audit_record`` inside the transaction that makes the change. It:

1. redacts secrets out of ``before`` and ``after`` (agentdesk.redaction);
2. on PostgreSQL takes a transaction-scoped advisory lock (``pg_advisory_xact_lock``), so
   that appends to the chain happen one at a time across every web process and worker
   thread. The lock is released when the caller's transaction commits or rolls back, and
   each statement after it sees the event the previous holder committed (READ COMMITTED).
   SQLite (the embedded mode) has one writer at a time already (IMMEDIATE transactions);
3. reads the last event's ``seq``, ``hash`` and time and writes the new event with
   ``seq + 1``, a time no earlier than the last one's (clocks of different hosts differ),
   and ``hash = sha256(canonical JSON of its content, prev_hash)``. The unique ``seq``
   backs the lock: two appends that somehow raced fail rather than fork the chain.

On PostgreSQL, 2 and 3 are one call of the database function ``agentdesk_audit_append``
(migration 0008), given the canonical JSON in parts around what only the lock's holder
knows (``canonical_parts``), so that nothing waits on this process while the lock is held
but its COMMIT. ``event_hash`` (used on SQLite and by ``audit_chain_verify``) defines the
hash; the function produces the same bytes.

A transaction with more work after its events (the runtime's step commit) wraps itself in
``audit_batch``: its events are collected and appended together right before it commits,
so the lock is held only from then on.

Because the lock is held until commit, a caller keeps the rest of its transaction short
(no model or network call after ``audit_record``; the runtime makes those outside any
transaction) and takes the row locks it needs before its first ``audit_record``, so that
two transactions never wait for each other's row and the chain at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from agentdesk.logging import current_request_id
from agentdesk.redaction import redact_value
from agentdesk.statements import Statement, insert_rows
from audit.models import AuditEvent, AuditVerb

GENESIS_HASH = "0" * 64
# Any constant will do; it only has to be the same in every process. ("audit" in ASCII.)
ADVISORY_LOCK_KEY = 0x6175646974


def _normalised(value: Any) -> Any:
    """``value`` as PostgreSQL's jsonb gives it back, so the hash survives the round trip.

    jsonb keeps no difference between 1.0 and 1 for large numbers (1e20 comes back as an
    integer), so integral floats are hashed as integers; everything else goes through JSON.
    """
    if isinstance(value, dict):
        return {str(k): _normalised(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalised(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def event_hash(
    *,
    seq: int,
    created_at: datetime,
    actor_id: int | None,
    actor_label: str,
    verb: str,
    object_type: str,
    object_id: str,
    before: Any,
    after: Any,
    trace_id: str,
    prev_hash: str,
) -> str:
    """SHA-256 (hex) of an event's canonical JSON: sorted keys, no spaces, UTF-8."""
    content = {
        "seq": seq,
        "created_at": _iso(created_at),
        "actor_id": actor_id,
        "actor_label": actor_label,
        "verb": verb,
        "object_type": object_type,
        "object_id": object_id,
        "before": _normalised(before),
        "after": _normalised(after),
        "trace_id": trace_id,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(_dump(content).encode()).hexdigest()


def _dump(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 (not escaped)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# What only the holder of the chain's lock knows: the event's time, its predecessor's hash
# and its seq. In this order among the sorted keys of the canonical JSON.
_CHAINED = ("created_at", "prev_hash", "seq")


def canonical_parts(event: AuditEvent) -> list[str]:
    """The event's canonical JSON (``event_hash``'s) in four parts around ``_CHAINED``.

    ``parts[0] + created_at (ISO, UTC, microseconds) + parts[1] + prev_hash + parts[2] +
    str(seq) + parts[3]`` is the canonical JSON, byte for byte: PostgreSQL fills in the
    three under the chain's lock (migration 0008, ``agentdesk_audit_append``).
    """
    content = {
        "actor_id": event.actor_id,
        "actor_label": event.actor_label,
        "verb": event.verb,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "before": _normalised(event.before),
        "after": _normalised(event.after),
        "trace_id": event.trace_id,
    }
    parts: list[str] = []
    current = "{"
    for i, key in enumerate(sorted([*content, *_CHAINED])):
        current += ("," if i else "") + _dump(key) + ":"
        if key == "seq":
            parts.append(current)
            current = ""
        elif key in _CHAINED:  # strings: the value goes between the quotes
            parts.append(current + '"')
            current = '"'
        else:
            current += _dump(content[key])
    parts.append(current + "}")
    return parts


def stored_hash(event: Any) -> str:
    """The hash an event (a model instance or a row with the same attributes) should have."""
    return event_hash(
        seq=event.seq,
        created_at=event.created_at,
        actor_id=event.actor_id,
        actor_label=event.actor_label,
        verb=event.verb,
        object_type=event.object_type,
        object_id=event.object_id,
        before=event.before,
        after=event.after,
        trace_id=event.trace_id,
        prev_hash=event.prev_hash,
    )


# The events of an ``audit_batch`` block, not chained yet; None outside one.
_batch: ContextVar[list[AuditEvent] | None] = ContextVar("agentdesk_audit_batch", default=None)


@contextmanager
def audit_batch(*, append: bool = True) -> Iterator[list[AuditEvent]]:
    """Chain and insert the events of this block together, as the block ends.

    For a transaction that writes its events early and has more work after them: the
    runtime's step commit, whose events (a run ending, actions proposed or done) come
    before the checkpoint's UPDATE. ``audit_record`` only collects them here; at the end
    of the block (still inside the transaction, right before it commits) they are appended
    with one lock, one read of the chain's head and one INSERT. The chain's lock is then
    held from that moment to the commit, not from the first event on, so steps of other
    runs wait for it less. An exception in the block discards them with the transaction.

    ``append=False``: the block yields the events and leaves them to the caller, who
    appends them later in the same transaction (``audit_append_statement`` with its COMMIT,
    or ``audit_append``).
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_batch must run inside the transaction that makes the change")
    events: list[AuditEvent] = []
    token = _batch.set(events)
    try:
        yield events
    finally:
        _batch.reset(token)
    if append and events:
        audit_append(events)


def audit_append(events: list[AuditEvent]) -> None:
    """Chain ``events`` after the current head, in order, and insert them (in a transaction)."""
    if transaction.get_connection().vendor == "postgresql":
        _append_in_postgresql(events)
        return
    # SQLite (the embedded mode) has one writer at a time already (IMMEDIATE transactions).
    last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash", "created_at").first()
    seq, prev_hash, at = last if last else (0, GENESIS_HASH, None)
    for event in events:
        seq += 1
        # Never earlier than the event before, whatever this host's clock says: time then
        # follows seq, and the auditor's time filters can be turned into a seq range.
        at = max(timezone.now(), at) if at else timezone.now()
        event.seq, event.created_at, event.prev_hash = seq, at, prev_hash
        event.hash = prev_hash = stored_hash(event)
    insert_rows(events)


def _append_in_postgresql(events: list[AuditEvent]) -> None:
    """Lock, chain and insert in one statement (``agentdesk_audit_append``, migration 0008).

    The lock is held until the caller commits; with the whole append in one call, its
    holder makes no further round trip to the database and does no Python work while
    holding it, only its COMMIT (or none: ``audit_append_statement``).
    """
    sql, params = audit_append_statement(events)
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(sql, params)
        audit_appended(events, cursor.fetchall())


def audit_append_statement(events: list[AuditEvent]) -> Statement:
    """The call of ``agentdesk_audit_append`` that chains and inserts ``events`` (PostgreSQL).

    For a caller that sends it itself, with its COMMIT (``agentdesk.statements.commit_with``),
    then hands the rows it returns to ``audit_appended``. Everything that does not depend on
    the chain's head (the canonical JSON around it) is prepared here, before the lock.
    """
    payload = [
        {
            "parts": canonical_parts(event),
            "at": timezone.now().isoformat(),
            "actor_id": event.actor_id,
            "actor_label": event.actor_label,
            "verb": event.verb,
            "object_type": event.object_type,
            "object_id": event.object_id,
            "before": event.before,
            "after": event.after,
            "trace_id": event.trace_id,
        }
        for event in events
    ]
    return (
        "SELECT event_id, event_seq, event_at, event_prev, event_hash "
        "FROM agentdesk_audit_append(%s)",
        [Jsonb(payload)],
    )


def audit_appended(events: list[AuditEvent], rows: Sequence[Sequence[Any]]) -> None:
    """Set on ``events`` what ``audit_append_statement`` gave them: id, seq, time, hashes."""
    for event, (pk, seq, at, prev_hash, digest) in zip(events, rows, strict=True):
        event.pk, event.seq, event.created_at, event.prev_hash, event.hash = (
            pk,
            seq,
            at,
            prev_hash,
            digest,
        )
        event._state.adding = False
        event._state.db = "default"


def _audit_verb(verb: AuditVerb | str) -> AuditVerb:
    """``verb`` as a member of AuditVerb; a string only if it is a member's exact value.

    The type says ``AuditVerb``, but a string from code mypy does not check (tests, a shell,
    an app of AGENTDESK_EXTRA_APPS) would otherwise reach the append-only log as a verb no
    filter knows, where it stays for good.
    """
    if isinstance(verb, AuditVerb):
        return verb
    try:
        return AuditVerb(verb)
    except ValueError:
        raise ValueError(
            f"unknown audit verb {verb!r}: audit_record takes a member of "
            "audit.models.AuditVerb (add one there for a new verb)"
        ) from None


def audit_record(
    *,
    actor: User | AnonymousUser | None,
    verb: AuditVerb,
    object_type: str,
    object_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    trace_id: str = "",
    actor_label: str = "",
) -> AuditEvent:
    """Append an event (or, inside ``audit_batch``, collect it for the block's end).

    An unknown ``verb`` is refused (ValueError, ``_audit_verb``) before anything is written.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction that makes the change")
    verb = _audit_verb(verb)
    # Without a run, the web request that made the change: everything one request changed
    # shares an id, which its response header and its log lines carry too.
    trace_id = trace_id or current_request_id()
    user = actor if actor is not None and actor.is_authenticated else None
    label = actor_label or (user.get_username() if user is not None else "system")
    # Through JSON once, so the hashed value is exactly what the jsonb column gives back.
    before = _normalised(json.loads(json.dumps(redact_value(before))))
    after = _normalised(json.loads(json.dumps(redact_value(after))))
    event = AuditEvent(
        actor=user,
        actor_label=label,
        verb=verb,
        object_type=object_type,
        object_id=object_id,
        before=before,
        after=after,
        trace_id=trace_id,
    )
    batch = _batch.get()
    if batch is not None:
        batch.append(event)
    else:
        audit_append([event])
    return event


# --- verifying -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainIntact:
    events: int
    last_seq: int
    head_hash: str

    def as_dict(self) -> dict[str, Any]:
        return {"intact": True, **asdict(self)}


@dataclass(frozen=True)
class ChainBreak:
    """The first event at which the chain does not hold, and why."""

    seq: int
    id: int
    problem: str
    events_checked: int

    def as_dict(self) -> dict[str, Any]:
        return {"intact": False, **asdict(self)}

    def message(self) -> str:
        return f"audit log broken at event seq {self.seq} (id {self.id}): {self.problem}"


_VERIFY_FIELDS = (
    "id",
    "seq",
    "created_at",
    "actor_id",
    "actor_label",
    "verb",
    "object_type",
    "object_id",
    "before",
    "after",
    "trace_id",
    "prev_hash",
    "hash",
)


def audit_chain_verify(*, batch: int = 5000) -> ChainIntact | ChainBreak:
    """Recompute the chain in seq order, ``batch`` events per query (keyset on seq).

    Checks, for each event: its seq follows the previous one (a gap means a deleted
    event), its prev_hash is the previous event's hash, and its hash is the hash of its
    content. The first failure is returned; nothing after it is trusted.
    """
    expected_seq, prev_hash, checked, after = 1, GENESIS_HASH, 0, 0
    while True:
        rows = list(
            AuditEvent.objects.filter(seq__gt=after).order_by("seq").values(*_VERIFY_FIELDS)[:batch]
        )
        if not rows:
            return ChainIntact(events=checked, last_seq=expected_seq - 1, head_hash=prev_hash)
        for row in rows:
            problem = ""
            if row["seq"] != expected_seq:
                problem = f"seq {row['seq']} follows {expected_seq - 1}: events are missing"
            elif row["prev_hash"] != prev_hash:
                problem = (
                    f"prev_hash {row['prev_hash'][:12]}… is not the previous event's hash "
                    f"{prev_hash[:12]}…"
                )
            else:
                computed = event_hash(
                    **{k: row[k] for k in _VERIFY_FIELDS if k not in ("id", "hash")}
                )
                if computed != row["hash"]:
                    problem = (
                        f"content does not match its hash (stored {row['hash'][:12]}…, "
                        f"computed {computed[:12]}…): the event was changed after it was written"
                    )
            if problem:
                return ChainBreak(
                    seq=row["seq"], id=row["id"], problem=problem, events_checked=checked
                )
            checked += 1
            expected_seq += 1
            prev_hash = row["hash"]
        after = rows[-1]["seq"]
