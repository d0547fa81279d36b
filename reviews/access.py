"""Who may see and decide in a queue: granting and revoking the object permissions.

Deciding implies seeing (a person cannot decide what they cannot open), so granting
decide also grants view, and revoking view also revokes decide. Each permission that
actually changes writes its audit event in the same transaction.

Separation of duties (invariant 14):

1. Changing who may see and decide is its own model permission,
   ``reviews.manage_queue_access``, held by admins (superusers and the ``access_admin``
   role), never by operators: ``change_queue`` is a queue's settings, not its people.
2. Nobody grants themselves anything, admins included: not to their own account, not to
   a group they belong to. Another admin does it, and the audit log names both. Revoking
   one's own access is allowed (it only takes a right away).
3. A refused grant or revocation writes ``queue.permission_refused`` (who asked, for
   whom, what, why) and changes nothing else.
"""

from __future__ import annotations

from typing import Literal

from django.contrib.auth.models import AnonymousUser, Group, User
from django.db import transaction
from guardian.shortcuts import assign_perm, get_group_perms, get_user_perms, remove_perm

from audit.log import audit_record
from audit.models import AuditVerb
from reviews.models import Queue

Level = Literal["view", "decide"]

MANAGE_ACCESS = "reviews.manage_queue_access"
_CODENAME = {"view": "view_queue", "decide": "decide_queue"}
NOT_AN_ADMIN = "Changing who may see and decide in a queue is an admin's right; ask an admin."


class AccessRefused(Exception):
    """A grant or revocation that may not be made; audited, nothing else changed.

    ``forbidden``: the actor lacks the right altogether (a view answers 403); otherwise
    the right is there but not for this change (a grant to oneself: 400).
    """

    def __init__(self, message: str, *, forbidden: bool) -> None:
        super().__init__(message)
        self.message = message
        self.forbidden = forbidden


def can_manage_access(*, user: User | AnonymousUser) -> bool:
    return bool(user.is_authenticated and user.is_active and user.has_perm(MANAGE_ACCESS))


def _principal_label(principal: User | Group) -> tuple[str, str]:
    if isinstance(principal, Group):
        return "group", principal.name
    return "user", principal.get_username()


def grant_refusal(*, actor: User, principal: User | Group, granted: bool) -> AccessRefused | None:
    """Why ``actor`` may not make this change; None when they may. Reads only."""
    if not can_manage_access(user=actor):
        return AccessRefused(NOT_AN_ADMIN, forbidden=True)
    if not granted:
        return None
    if isinstance(principal, Group):
        if principal.user_set.filter(pk=actor.pk).exists():
            return AccessRefused(
                f"You belong to the group {principal.name}: granting it access would grant "
                "it to yourself. Another admin must do it.",
                forbidden=False,
            )
    elif principal.pk == actor.pk:
        return AccessRefused(
            "Nobody grants themselves access to a queue: another admin must do it.",
            forbidden=False,
        )
    return None


def permissions_held(principal: User | Group, queue: Queue) -> set[str]:
    # Direct grants only: a user's access through a group is the group's to change.
    return set(
        get_group_perms(principal, queue)
        if isinstance(principal, Group)
        else get_user_perms(principal, queue)
    )


def _changes(principal: User | Group, queue: Queue, wanted: list[str], granted: bool) -> bool:
    held = permissions_held(principal, queue)
    return any((_CODENAME[each] in held) != granted for each in wanted)


def queue_permission_refused(
    *, actor: User, queue: Queue, asked_for: str, permission: str, reason: str
) -> None:
    """Record a refused grant or revocation (its own transaction: the refusal must stay)."""
    with transaction.atomic():
        audit_record(
            actor=actor,
            verb=AuditVerb.QUEUE_PERMISSION_REFUSED,
            object_type="queue",
            object_id=str(queue.pk),
            after={"asked_for": asked_for[:150], "permission": permission, "reason": reason},
        )


def queue_permission_set(
    *,
    actor: User,
    queue: Queue,
    principal: User | Group,
    level: Level,
    granted: bool,
) -> list[str]:
    """Grant or revoke ``level`` on ``queue`` to a user or a group; the codenames changed.

    AccessRefused (audited, nothing changed) when the actor may not manage queue access
    or grants to themselves.
    """
    kind, name = _principal_label(principal)
    if granted:
        wanted = ["view", "decide"] if level == "decide" else ["view"]
    else:
        wanted = ["decide", "view"] if level == "view" else ["decide"]
    refusal = grant_refusal(actor=actor, principal=principal, granted=granted)
    # A grant to oneself of what one already holds changes nothing and is no refusal
    # (the admin's permission form re-saves every permission shown).
    if refusal is not None and (refusal.forbidden or _changes(principal, queue, wanted, granted)):
        queue_permission_refused(
            actor=actor,
            queue=queue,
            asked_for=f"{kind} {name}",
            permission=f"{'grant' if granted else 'revoke'} {_CODENAME[level]}",
            reason=refusal.message,
        )
        raise refusal
    changed: list[str] = []
    with transaction.atomic():
        held = permissions_held(principal, queue)
        for each in wanted:
            codename = _CODENAME[each]
            if (codename in held) == granted:
                continue
            if granted:
                assign_perm(f"reviews.{codename}", principal, queue)
            else:
                remove_perm(f"reviews.{codename}", principal, queue)
            audit_record(
                actor=actor,
                verb=AuditVerb.QUEUE_PERMISSION_GRANTED
                if granted
                else AuditVerb.QUEUE_PERMISSION_REVOKED,
                object_type="queue",
                object_id=str(queue.pk),
                before={"holds": codename in held},
                after={kind: name, "permission": codename, "holds": granted},
            )
            changed.append(codename)
    return changed
