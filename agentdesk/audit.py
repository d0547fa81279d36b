"""Writing audit events. Call inside the transaction that makes the change."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction

from agentdesk.models import AuditEvent


def audit_record(
    *,
    actor: User | AnonymousUser | None,
    verb: str,
    object_type: str,
    object_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    trace_id: str = "",
    actor_label: str = "",
) -> AuditEvent:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction that makes the change")
    user = actor if actor is not None and actor.is_authenticated else None
    label = actor_label or (user.get_username() if user is not None else "system")
    return AuditEvent.objects.create(
        actor=user,
        actor_label=label,
        verb=verb,
        object_type=object_type,
        object_id=object_id,
        before=before,
        after=after,
        trace_id=trace_id,
    )
