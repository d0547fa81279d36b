"""Reads of the audit log for the auditor pages: filters and keyset pages on seq."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from audit.models import AuditEvent


@dataclass(frozen=True)
class AuditFilters:
    actor: str = ""
    object_type: str = ""
    object_id: str = ""
    verb: str = ""
    since: datetime | None = None
    until: datetime | None = None
    trace_id: str = ""

    @property
    def is_empty(self) -> bool:
        return self == AuditFilters()


def _seq_at(*, order: tuple[str, str], **condition: Any) -> int | None:
    seq: int | None = (
        AuditEvent.objects.filter(**condition)
        .order_by(*order)
        .values_list("seq", flat=True)
        .first()
    )
    return seq


def audit_events_filtered(*, filters: AuditFilters) -> QuerySet[AuditEvent]:
    """Events matching every filter that is set (each backed by an index ending in seq).

    A time range becomes a seq range too: time never goes back along the chain
    (audit_record), so the events of a range are one run of seqs, found with two lookups
    in the created_at index. Without it PostgreSQL walks seq backwards from the newest
    event until it reaches the range, which for a week last spring is most of the table.
    """
    events = AuditEvent.objects.all()
    if filters.actor:
        events = events.filter(actor_label=filters.actor)
    if filters.object_type:
        events = events.filter(object_type=filters.object_type)
    if filters.object_id:
        events = events.filter(object_id=filters.object_id)
    if filters.verb:
        events = events.filter(verb__startswith=filters.verb)
    if filters.since:
        first = _seq_at(created_at__gte=filters.since, order=("created_at", "seq"))
        if first is None:
            return events.none()
        events = events.filter(created_at__gte=filters.since, seq__gte=first)
    if filters.until:
        last = _seq_at(created_at__lt=filters.until, order=("-created_at", "-seq"))
        if last is None:
            return events.none()
        events = events.filter(created_at__lt=filters.until, seq__lte=last)
    if filters.trace_id:
        events = events.filter(trace_id=filters.trace_id)
    return events


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    older_than: int | None  # the ``before`` cursor of the next (older) page, if there is one
    newer_than: int | None  # the ``after`` cursor of the previous (newer) page, if any


def audit_page(
    *, filters: AuditFilters, before: int | None, after: int | None, size: int
) -> AuditPage:
    """One page, newest first, by keyset on seq: no OFFSET, so page 20,000 costs page 1.

    ``before``: events with a smaller seq (going older); ``after``: events with a larger
    seq (going back newer); neither: the newest events.
    """
    events = audit_events_filtered(filters=filters)
    if after is not None:
        rows = list(events.filter(seq__gt=after).order_by("seq")[: size + 1])
        more_newer = len(rows) > size
        rows = rows[:size][::-1]
        return AuditPage(
            events=rows,
            older_than=rows[-1].seq if rows else after + 1,
            newer_than=rows[0].seq if rows and more_newer else None,
        )
    if before is not None:
        events = events.filter(seq__lt=before)
    rows = list(events.order_by("-seq")[: size + 1])
    more_older = len(rows) > size
    rows = rows[:size]
    return AuditPage(
        events=rows,
        older_than=rows[-1].seq if rows and more_older else None,
        newer_than=(rows[0].seq if rows else before - 1) if before is not None else None,
    )


def audit_events_for_export(
    *, filters: AuditFilters, limit: int, batch: int = 2000
) -> Iterator[AuditEvent]:
    """At most ``limit`` matching events, newest first, read ``batch`` at a time by seq."""
    events = audit_events_filtered(filters=filters).order_by("-seq")
    sent, cursor = 0, None
    while sent < limit:
        page: Any = events if cursor is None else events.filter(seq__lt=cursor)
        rows = list(page[: min(batch, limit - sent)])
        if not rows:
            return
        yield from rows
        sent += len(rows)
        cursor = rows[-1].seq
