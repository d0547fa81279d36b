"""Invariant 9: a queue a reviewer may not open does not show through the reviewers' pages.

Rita reviews queues A and C; A escalates to B (Bob's), which she may not open; D is
nobody's she knows. The escalate form offers C and A's configured target without naming
it, and nothing else; a request's history does not name a hidden queue; the candidates
page shows a curator the candidates of the queues they see, operators every one by role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from guardian.shortcuts import assign_perm

from audit.models import AuditEvent
from reviews import services
from reviews.models import ApprovalRequest, Decision, GoldenCandidate, Queue
from tests.reviews.factories import queue_make, request_make, user_make

pytestmark = pytest.mark.django_db


@dataclass
class World:
    users: dict[str, Any]
    queues: dict[str, Queue]
    request: ApprovalRequest  # pending in A


@pytest.fixture
def world(db: None) -> World:
    users = {
        "rita": user_make("rita"),
        "bob": user_make("bob"),
        "dora": user_make("dora"),
        "otto": user_make("otto", "operator"),
    }
    queues = {
        "a": queue_make("queue-a", deciders=(users["rita"],)),
        "b": queue_make("queue-b", deciders=(users["bob"],)),
        "c": queue_make("queue-c", deciders=(users["rita"], users["bob"])),
        "d": queue_make("queue-d", deciders=(users["dora"],)),
    }
    queues["a"].escalate_to = queues["b"]
    queues["a"].save(update_fields=["escalate_to"])
    return World(users, queues, request_make(queue=queues["a"]))


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _snapshot(request: ApprovalRequest) -> tuple[Any, ...]:
    request.refresh_from_db()
    return (request.state, request.queue_id, Decision.objects.count(), AuditEvent.objects.count())


def _options(html: str) -> list[tuple[str, str]]:
    select = re.search(r'<select name="to_queue".*?</select>', html, re.DOTALL)
    assert select, "no escalate form"
    return re.findall(r'<option value="(\d+)"[^>]*>([^<]*)</option>', select.group(0))


def test_invariant_9_the_escalate_form_names_only_queues_the_reviewer_sees(world: World) -> None:
    html = _client(world.users["rita"]).get(f"/inbox/requests/{world.request.pk}/").content
    page = html.decode()

    assert _options(page) == [
        (str(world.queues["b"].pk), "the next level (configured)"),
        (str(world.queues["c"].pk), "Queue C"),
    ]
    assert "Queue B" not in page
    assert "Queue D" not in page


def test_invariant_9_a_reviewer_who_sees_the_target_reads_its_name(world: World) -> None:
    """Bob may open B: a request of C that escalates to B shows him B's name."""
    world.queues["c"].escalate_to = world.queues["b"]
    world.queues["c"].save(update_fields=["escalate_to"])
    request = request_make(queue=world.queues["c"])

    page = _client(world.users["bob"]).get(f"/inbox/requests/{request.pk}/").content.decode()

    assert _options(page) == [(str(world.queues["b"].pk), "Queue B")]


@pytest.mark.parametrize("htmx", [False, True])
def test_invariant_9_escalating_to_a_hidden_queue_that_is_not_the_target_is_refused(
    world: World, htmx: bool
) -> None:
    before = _snapshot(world.request)

    response = _client(world.users["rita"]).post(
        f"/inbox/requests/{world.request.pk}/escalate",
        {"to_queue": world.queues["d"].pk, "reason": "probing"},
        headers={"HX-Request": "true"} if htmx else {},
    )

    # Under htmx a refusal is a 200 with the message in the pane (reviews/views.py).
    assert response.status_code == (200 if htmx else 400)
    assert "Choose a queue and say why." in response.content.decode()
    assert "Queue D" not in response.content.decode()
    assert _snapshot(world.request) == before


def test_invariant_9_escalating_to_the_configured_target_does_not_name_it(world: World) -> None:
    response = _client(world.users["rita"]).post(
        f"/inbox/requests/{world.request.pk}/escalate",
        {"to_queue": world.queues["b"].pk, "reason": "needs a senior"},
        headers={"HX-Request": "true"},
    )

    world.request.refresh_from_db()
    assert response.status_code == 200
    assert world.request.queue_id == world.queues["b"].pk
    html = response.content.decode()
    assert "escalated to the next level (configured)</p>" in html
    assert "Queue B" not in html


def test_invariant_9_a_requests_history_does_not_name_a_hidden_queue(world: World) -> None:
    """A went up to B; Bob sent it on to C, which Rita sees: its history hides B's name."""
    services.approval_escalate(
        request_id=world.request.pk,
        user=world.users["rita"],
        to_queue=world.queues["b"],
        reason="up",
    )
    services.approval_escalate(
        request_id=world.request.pk,
        user=world.users["bob"],
        to_queue=world.queues["c"],
        reason="over",
    )

    page = _client(world.users["rita"]).get(f"/inbox/requests/{world.request.pk}/")
    bob = _client(world.users["bob"]).get(f"/inbox/requests/{world.request.pk}/")

    html = page.content.decode()
    assert page.status_code == 200
    assert "→ a queue you cannot open" in html
    assert "→ Queue C" in html
    assert "Queue B" not in html
    assert "→ Queue B" in bob.content.decode()


def _candidate_in(world: World, queue: str, feedback: str) -> GoldenCandidate:
    request = request_make(queue=world.queues[queue])
    decider = {"a": "rita", "b": "bob"}[queue]
    services.approval_reject(request_id=request.pk, user=world.users[decider], feedback=feedback)
    return GoldenCandidate.objects.get(request=request)


@pytest.mark.parametrize(
    ("persona", "expected"),
    [("curator_a", {"A-FEEDBACK"}), ("otto", {"A-FEEDBACK", "B-FEEDBACK"}), ("rita", None)],
)
def test_invariant_9_candidates_show_the_queues_the_reader_sees_or_all_by_role(
    world: World, persona: str, expected: set[str] | None
) -> None:
    _candidate_in(world, "a", "A-FEEDBACK")
    _candidate_in(world, "b", "B-FEEDBACK")
    # A reviewer of A who also curates candidates, without the operators' view of all runs.
    curator = user_make("cora")
    curator.user_permissions.add(
        Permission.objects.get(content_type__app_label="reviews", codename="view_goldencandidate")
    )
    assign_perm("reviews.view_queue", curator, world.queues["a"])
    user = curator if persona == "curator_a" else world.users[persona]
    before = AuditEvent.objects.count()

    response = _client(user).get("/inbox/candidates/")

    if expected is None:
        assert response.status_code == 403
    else:
        html = response.content.decode()
        assert response.status_code == 200
        assert {text for text in ("A-FEEDBACK", "B-FEEDBACK") if text in html} == expected
        assert ("Queue B" in html) is ("B-FEEDBACK" in expected)
    assert AuditEvent.objects.count() == before
