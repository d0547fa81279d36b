"""Roles as groups, and the demo accounts that hold them."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction

# Model permissions of each role, as "app_label.codename". Queue-level access (who may
# decide what) is an object permission granted per queue, not part of a role.
# A model permission on Queue (``reviews.view_queue``) is a global grant: it shows every
# queue, which is what auditors need; reviewers get theirs queue by queue.
# Runs likewise: ``runs.view_run`` opens the runs pages, and a reviewer sees there the runs
# with requests in queues they may open; ``runs.view_all_runs`` is every run, by role.
ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "reviewer": ("runs.view_run",),
    "operator": (
        "runs.view_run",
        "runs.view_all_runs",
        "runs.add_run",
        "runs.view_deadletter",
        "runs.change_deadletter",
        "reviews.change_queue",
        "reviews.view_goldencandidate",
        "releases.view_agentconfigversion",
        "releases.change_agentconfigversion",
        "releases.view_promptversion",
        "releases.change_promptversion",
        "releases.view_release",
        "releases.change_release",
        "evals.view_dataset",
        "evals.change_dataset",
        "evals.view_eval",
        "evals.run_eval",
    ),
    "auditor": (
        "runs.view_run",
        "runs.view_all_runs",
        "runs.view_deadletter",
        "audit.view_auditevent",
        "releases.view_agentconfigversion",
        "releases.view_promptversion",
        "releases.view_release",
        "reviews.view_queue",
        "reviews.view_goldencandidate",
        "evals.view_dataset",
        "evals.view_eval",
    ),
}
# Moving an agent's production release label changes what every new run is told and how
# it is judged, so it is a permission of its own that operators do not hold: a release
# manager is an operator who may also do that (superusers hold every permission anyway).
# Activating a configuration version stays an operator's move, as it was before releases.
ROLE_PERMISSIONS["release_manager"] = (
    *ROLE_PERMISSIONS["operator"],
    "releases.promote_production_release",
    # A new judge grades every later eval: the gate's evidence, so the same hands.
    "evals.add_judgeprompt",
)

# Who may see and decide in each queue is an admin's right, apart from the queues'
# settings (reviews.access): an access admin grants and revokes, and sees every queue's
# members; operators look only. Superusers hold it too.
ROLE_PERMISSIONS["access_admin"] = (
    "runs.view_run",
    "reviews.change_queue",
    "reviews.manage_queue_access",
)

DEMO_ACCOUNTS: tuple[tuple[str, str, str | None], ...] = (
    # username, password, role (None: superuser)
    ("reviewer", "reviewer-demo", "reviewer"),
    ("senior", "senior-demo", "reviewer"),
    ("operator", "operator-demo", "operator"),
    ("release", "release-demo", "release_manager"),
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
    _demo_queues_create()


# slug, name, tier, SLA minutes, escalates to, who views and decides, who only views
DEMO_QUEUES: tuple[tuple[str, str, int, int, str | None, tuple[str, ...], tuple[str, ...]], ...] = (
    ("refunds-senior", "Refunds (senior)", 2, 60, None, ("senior",), ("reviewer",)),
    ("refunds", "Refunds", 1, 30, "refunds-senior", ("reviewer", "senior"), ()),
    ("support", "Support", 0, 120, None, ("reviewer", "senior"), ()),
)


def _demo_queues_create() -> None:
    """The example agent's queues, and which demo reviewer may see and decide in each."""
    from guardian.shortcuts import assign_perm

    from reviews.models import Queue

    User = get_user_model()
    for slug, name, tier, sla, escalate_to, deciders, viewers in DEMO_QUEUES:
        queue, _ = Queue.objects.update_or_create(
            slug=slug,
            defaults={
                "name": name,
                "tier": tier,
                "sla_minutes": sla,
                "escalate_to": Queue.objects.get(slug=escalate_to) if escalate_to else None,
            },
        )
        for username in deciders:
            user = User.objects.get(username=username)
            assign_perm("reviews.view_queue", user, queue)
            assign_perm("reviews.decide_queue", user, queue)
        for username in viewers:
            assign_perm("reviews.view_queue", User.objects.get(username=username), queue)
