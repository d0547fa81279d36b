"""Roles as groups, and the demo accounts that hold them."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction

# Model permissions of each role, as "app_label.codename". Queue-level access (who may
# decide what) is an object permission granted per queue, not part of a role.
ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "reviewer": ("runs.view_run",),
    "operator": (
        "runs.view_run",
        "runs.add_run",
        "runs.view_deadletter",
        "runs.change_deadletter",
    ),
    "auditor": ("runs.view_run", "runs.view_deadletter", "agentdesk.view_auditevent"),
}

DEMO_ACCOUNTS: tuple[tuple[str, str, str | None], ...] = (
    # username, password, role (None: superuser)
    ("reviewer", "reviewer-demo", "reviewer"),
    ("operator", "operator-demo", "operator"),
    ("auditor", "auditor-demo", "auditor"),
    ("admin", "admin-demo", None),
)


@transaction.atomic
def roles_sync() -> dict[str, Group]:
    """Create the role groups and set their permissions to exactly ROLE_PERMISSIONS."""
    groups = {}
    for role, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for dotted in perms:
            app_label, codename = dotted.split(".")
            wanted.append(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        group.permissions.set(wanted)
        groups[role] = group
    return groups


@transaction.atomic
def demo_accounts_create() -> None:
    """Create (or reset) the demo logins printed by ``make demo``."""
    groups = roles_sync()
    User = get_user_model()
    for username, password, role in DEMO_ACCOUNTS:
        user, _ = User.objects.get_or_create(username=username)
        user.set_password(password)
        user.email = f"{username}@agentdesk.invalid"
        user.is_superuser = role is None
        user.is_staff = role is None
        user.save()
        user.groups.set([groups[role]] if role else [])
