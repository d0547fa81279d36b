"""Invariant 9 for runs: who sees a run, and what of it, on the pages, htmx and the API.

Personas: Rita reviews queue A, Bob reviews queue B, Otto is an operator, Aude an auditor,
Oscar holds no role, and an anonymous visitor. A reviewer sees the runs with requests in
queues they may open and, within such a run, nothing of its requests in other queues;
operators and auditors see every run in full, by role. No access is a 404 (the list, for
someone without ``runs.view_run``, a 403), and reading changes nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.utils import timezone
from guardian.shortcuts import remove_perm

from agentdesk.roles import ROLE_PERMISSIONS
from agentdesk.tokens import api_token_create
from audit.models import AuditEvent
from reviews import services as review_services
from reviews.models import ApprovalRequest, Queue
from runs.models import Run, RunState, Step
from tests.reviews.factories import queue_make, request_make, user_make

pytestmark = pytest.mark.django_db

PERSONAS = ["reviewer_a", "reviewer_b", "operator", "auditor", "outsider", "anonymous"]

SECRET_ARGS = {"order_id": "SO-7777", "amount": "990.00", "reason": "B-ONLY-REASON"}
SECRET_FEEDBACK = "B-ONLY-FEEDBACK: never refund a reseller"
SECRET_OUTPUT = "We refunded 990.00 for SO-7777."
B_CALL = SECRET_ARGS


@dataclass
class World:
    users: dict[str, Any]
    queue_a: Queue
    queue_b: Queue
    run_a: Run  # a request in A only
    run_b: Run  # a request in B only
    run_ab: Run  # a request in A (seq 1), then one in B (seq 3), rejected with feedback
    request_b: ApprovalRequest  # run_ab's request in B


def _step(run: Run, seq: int, kind: str, *, action: Any, outcome: Any, state: Any) -> Step:
    now = timezone.now()
    return Step.objects.create(
        run=run,
        seq=seq,
        kind=kind,
        state=state,
        action=action,
        outcome=outcome,
        status="ok",
        latency_ms=10 + seq,
        started_at=now,
        finished_at=now + timedelta(milliseconds=10),
    )


@pytest.fixture
def world(db: None) -> World:
    users = {
        "reviewer_a": user_make("rita"),
        "reviewer_b": user_make("bob"),
        "operator": user_make("otto", "operator"),
        "auditor": user_make("aude", "auditor"),
        "outsider": user_make("oscar", None),
        "anonymous": None,
    }
    queue_a = queue_make("queue-a", deciders=(users["reviewer_a"],))
    queue_b = queue_make("queue-b", deciders=(users["reviewer_b"],))
    run_a = request_make(queue=queue_a).run
    run_b = request_make(queue=queue_b).run
    request_a = request_make(queue=queue_a, tool="send_reply")
    run_ab = request_a.run
    request_b = request_make(queue=queue_b, run=run_ab, proposed_seq=3, arguments=SECRET_ARGS)
    review_services.approval_reject(
        request_id=request_b.pk, user=users["reviewer_b"], feedback=SECRET_FEEDBACK
    )
    # The steps as the runtime records them: the proposal of A's call, its result, the
    # proposal of B's call (its arguments), the tool step returning B's feedback, and the
    # next model step, whose state carries that feedback in the conversation.
    _step(
        run_ab,
        0,
        "model",
        action={"type": "tool_calls", "calls": [{"tool": "send_reply"}]},
        outcome={},
        state={"messages": 2},
    )
    _step(
        run_ab,
        1,
        "tool",
        action={"tool": "send_reply", "arguments": {"ticket_id": "T-1"}},
        outcome={"sent": True},
        state={"messages": 3},
    )
    _step(
        run_ab,
        3,
        "model",
        action={
            "type": "tool_calls",
            "calls": [{"tool": "issue_refund", "arguments": SECRET_ARGS}],
        },
        outcome={},
        state={"messages": 4},
    )
    _step(
        run_ab,
        4,
        "tool",
        action={"tool": "issue_refund", "arguments": SECRET_ARGS},
        outcome={"rejected": SECRET_FEEDBACK},
        state={"messages": 5},
    )
    _step(
        run_ab,
        5,
        "model",
        action={"type": "final_answer"},
        outcome={"content": SECRET_OUTPUT},
        state={"last": {"role": "tool", "content": SECRET_FEEDBACK}},
    )
    Run.objects.filter(pk=run_ab.pk).update(state=RunState.SUCCEEDED, output=SECRET_OUTPUT)
    run_ab.refresh_from_db()
    request_b.refresh_from_db()
    return World(users, queue_a, queue_b, run_a, run_b, run_ab, request_b)


def _client(world: World, persona: str) -> Client:
    client = Client()
    if world.users[persona] is not None:
        client.force_login(world.users[persona])
    return client


def _snapshot() -> tuple[Any, ...]:
    return (
        AuditEvent.objects.count(),
        list(Run.objects.order_by("pk").values_list("pk", "state", "updated_at")),
        list(ApprovalRequest.objects.order_by("pk").values_list("pk", "state", "queue_id")),
    )


RUNS_LISTED = {
    "reviewer_a": {"run_a", "run_ab"},
    "reviewer_b": {"run_b", "run_ab"},
    "operator": {"run_a", "run_b", "run_ab"},
    "auditor": {"run_a", "run_b", "run_ab"},
}


def _listed(world: World, html: str) -> set[str]:
    names = ("run_a", "run_b", "run_ab")
    return {name for name in names if f"/runs/{getattr(world, name).pk}/" in html}


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("htmx", [False, True])
def test_invariant_9_the_run_list_shows_runs_by_queue_or_by_role(
    world: World, persona: str, htmx: bool
) -> None:
    headers = {"HX-Request": "true"} if htmx else {}
    before = _snapshot()

    response = _client(world, persona).get("/runs/", headers=headers)

    if persona == "anonymous":
        assert response.status_code == 302
        assert response["Location"] == "/login/?next=/runs/"
    elif persona == "outsider":
        assert response.status_code == 403
    else:
        assert response.status_code == 200
        assert _listed(world, response.content.decode()) == RUNS_LISTED[persona]
    assert _snapshot() == before


def test_invariant_9_a_state_filter_keeps_the_scope(world: World) -> None:
    html = _client(world, "reviewer_a").get("/runs/?state=succeeded").content.decode()

    assert _listed(world, html) == {"run_ab"}


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("name", ["run_a", "run_b", "run_ab"])
def test_invariant_9_a_run_page_htmx_and_api_are_404_without_access(
    world: World, persona: str, name: str
) -> None:
    run = getattr(world, name)
    client = _client(world, persona)
    user = world.users[persona]
    key = api_token_create(user=user, name="t")[1] if user is not None else "adk_nobody"
    before = _snapshot()

    page = client.get(f"/runs/{run.pk}/")
    partial = client.get(f"/runs/{run.pk}/", headers={"HX-Request": "true"})
    api = Client().get(f"/api/runs/{run.pk}", HTTP_AUTHORIZATION=f"Bearer {key}")

    if persona == "anonymous":
        assert (page.status_code, partial.status_code) == (302, 302)
        assert api.status_code == 401
    elif name in RUNS_LISTED.get(persona, set()):
        assert (page.status_code, partial.status_code, api.status_code) == (200, 200, 200)
        assert api.json()["id"] == str(run.pk)
    else:
        assert (page.status_code, partial.status_code, api.status_code) == (404, 404, 404)
        assert api.json() == {"error": {"message": "no such run"}}
    assert _snapshot() == before


def test_invariant_9_a_reviewer_reads_nothing_of_a_hidden_queues_request(world: World) -> None:
    html = _client(world, "reviewer_a").get(f"/runs/{world.run_ab.pk}/").content.decode()

    for secret in (
        "Queue B",
        "SO-7777",
        "990.00",
        "B-ONLY-REASON",
        "B-ONLY-FEEDBACK",
        SECRET_OUTPUT,
        "issue_refund",
        world.request_b.routing_reason,
    ):
        assert secret not in html, secret
    # The steps before B's call in full; from it on, only their headings.
    assert html.count('class="step step-model step-withheld"') == 2
    assert html.count('class="step step-tool step-withheld"') == 1
    assert "T-1" in html  # A's call, step 1
    assert 'id="run-withheld"' in html


def test_invariant_9_operators_and_auditors_read_the_whole_run(world: World) -> None:
    for persona in ("operator", "auditor"):
        html = _client(world, persona).get(f"/runs/{world.run_ab.pk}/").content.decode()

        assert "step-withheld" not in html
        assert 'id="run-withheld"' not in html
        assert "B-ONLY-FEEDBACK" in html
        assert SECRET_OUTPUT in html


def test_invariant_9_the_api_withholds_the_answer_after_a_hidden_call(world: World) -> None:
    def get(persona: str) -> dict[str, Any]:
        key = api_token_create(user=world.users[persona], name="t")[1]
        response = Client().get(f"/api/runs/{world.run_ab.pk}", HTTP_AUTHORIZATION=f"Bearer {key}")
        assert response.status_code == 200
        return response.json()

    reviewer, operator = get("reviewer_a"), get("operator")

    assert (reviewer["output"], reviewer["error"], reviewer["withheld"]) == (
        None,
        None,
        ["output", "error"],
    )
    assert (operator["output"], "withheld" in operator) == (SECRET_OUTPUT, False)
    assert reviewer["tokens_in"] == operator["tokens_in"] == 0


def test_invariant_9_a_run_waiting_in_a_hidden_queue_names_nothing(world: World) -> None:
    pending_b = request_make(queue=world.queue_b, run=world.run_a, proposed_seq=4)
    ApprovalRequest.objects.filter(run=world.run_a).exclude(pk=pending_b.pk).update(
        state="approved"
    )

    rita = _client(world, "reviewer_a").get(f"/runs/{world.run_a.pk}/").content.decode()
    bob = _client(world, "reviewer_b").get(f"/runs/{world.run_a.pk}/").content.decode()

    assert 'id="run-pending-hidden"' in rita
    assert "Queue B" not in rita
    assert pending_b.routing_reason not in rita
    assert f"/inbox/requests/{pending_b.pk}/" not in rita
    assert "<strong>Queue B</strong>" in bob
    assert f"/inbox/requests/{pending_b.pk}/" in bob


def test_invariant_9_access_revoked_between_two_reads_is_a_404(world: World) -> None:
    client = _client(world, "reviewer_a")
    assert client.get(f"/runs/{world.run_a.pk}/").status_code == 200

    remove_perm("reviews.view_queue", world.users["reviewer_a"], world.queue_a)

    assert client.get(f"/runs/{world.run_a.pk}/").status_code == 404
    assert _listed(world, client.get("/runs/").content.decode()) == set()


def test_invariant_9_an_inactive_user_sees_no_run(world: World) -> None:
    user = world.users["reviewer_a"]
    client = _client(world, "reviewer_a")
    key = api_token_create(user=user, name="t")[1]
    type(user).objects.filter(pk=user.pk).update(is_active=False)

    assert client.get(f"/runs/{world.run_a.pk}/").status_code == 302  # logged out
    api = Client().get(f"/api/runs/{world.run_a.pk}", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.status_code == 401


def test_invariant_9_only_operators_and_auditors_hold_view_all_runs() -> None:
    holders = {role for role, perms in ROLE_PERMISSIONS.items() if "runs.view_all_runs" in perms}

    assert holders == {"operator", "auditor", "release_manager"}


def test_invariant_9_the_upgrade_grants_view_all_runs_to_the_existing_role_groups(
    db: None,
) -> None:
    """Migration 0011 on a deployment whose role groups predate the permission."""
    migration = importlib.import_module("runs.migrations.0011_run_view_all_runs_permission")
    perm = Permission.objects.get(content_type__app_label="runs", codename="view_all_runs")
    groups = {name: Group.objects.create(name=name) for name in ("operator", "reviewer", "ops")}

    migration._grant(apps, None)
    migration._grant(apps, None)  # a migration re-run after a failure does no harm

    assert {name for name, group in groups.items() if perm in group.permissions.all()} == {
        "operator"
    }
