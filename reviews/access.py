"""Who may see and decide in a queue: granting and revoking the object permissions.

Deciding implies seeing (a person cannot decide what they cannot open), so granting
decide also grants view, and revoking view also revokes decide. Each permission that
actually changes writes its audit event in the same transaction.
"""

from __future__ import annotations

from typing import Literal

from django.contrib.auth.models import Group, User
from django.db import transaction
from guardian.shortcuts import assign_perm, get_group_perms, get_user_perms, remove_perm

from agentdesk.audit import audit_record
from reviews.models import Queue

Level = Literal["view", "decide"]

_CODENAME = {"view": "view_queue", "decide": "decide_queue"}


def queue_permission_set(
    *,
    actor: User,
    queue: Queue,
    principal: User | Group,
    level: Level,
    granted: bool,
) -> list[str]:
    """Grant or revoke ``level`` on ``queue`` to a user or a group; the codenames changed."""
    if granted:
        wanted = ["view", "decide"] if level == "decide" else ["view"]
    else:
        wanted = ["decide", "view"] if level == "view" else ["decide"]
    changed: list[str] = []
    kind = "group" if isinstance(principal, Group) else "user"
    name = principal.name if isinstance(principal, Group) else principal.get_username()
    with transaction.atomic():
        # Direct grants only: a user's access through a group is the group's to change.
        held = set(
            get_group_perms(principal, queue)
            if isinstance(principal, Group)
            else get_user_perms(principal, queue)
        )
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
                verb="queue.permission_granted" if granted else "queue.permission_revoked",
                object_type="queue",
                object_id=str(queue.pk),
                before={"holds": codename in held},
                after={kind: name, "permission": codename, "holds": granted},
            )
            changed.append(codename)
    return changed
