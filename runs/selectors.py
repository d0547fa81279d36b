"""Reads of runs for pages and the API."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.db.models import QuerySet

from runs.models import Run, Step

User = AuthUser | AnonymousUser


def run_list_visible(*, user: User, state: str | None = None) -> QuerySet[Run]:
    """Runs the user may see, newest first.

    Until queues bring per-object access, seeing runs is the model permission
    ``runs.view_run`` (reviewers, operators, auditors).
    """
    if not user.has_perm("runs.view_run"):
        return Run.objects.none()
    runs = Run.objects.select_related("submitted_by").defer("checkpoint", "input")
    if state:
        runs = runs.filter(state=state)
    return runs


def run_get_visible(*, user: User, run_id: str) -> Run | None:
    if not user.has_perm("runs.view_run"):
        return None
    return Run.objects.select_related("submitted_by").filter(pk=run_id).first()


def run_steps(*, run: Run) -> QuerySet[Step]:
    return run.steps.select_related("executed_action").order_by("seq")
