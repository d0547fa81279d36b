"""Who may do what in the inbox: a matrix over every page and htmx endpoint.

Personas: Rita reviews queue A (view and decide), Vera may only view A, Bob reviews
queue B, Otto is an operator, Aude an auditor (sees every queue, decides none), and an
anonymous visitor. No access is a 404, view without decide is a 403, and a denied
request changes nothing: not the request, not its decisions, not the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from guardian.models import GroupObjectPermission, UserObjectPermission

from audit.models import AuditEvent
from reviews.models import ApprovalRequest, Decision, GoldenCandidate, Queue
from tests.reviews.factories import queue_make, request_make, user_make

pytestmark = pytest.mark.django_db

PERSONAS = ["reviewer_a", "viewer_a", "reviewer_b", "operator", "auditor", "anonymous"]


@dataclass
class World:
    users: dict[str, Any]
    queue_a: Queue
    queue_b: Queue
    request: ApprovalRequest


@pytest.fixture
def world(db: None) -> World:
    users = {
        "reviewer_a": user_make("rita"),
        "viewer_a": user_make("vera"),
        "reviewer_b": user_make("bob"),
        "operator": user_make("otto", "operator"),
        "auditor": user_make("aude", "auditor"),
        "anonymous": None,
    }
    queue_a = queue_make("queue-a", deciders=(users["reviewer_a"],), viewers=(users["viewer_a"],))
    queue_b = queue_make("queue-b", deciders=(users["reviewer_b"],))
    # A escalates to B, as refunds to refunds-senior: its reviewers may hand a call up to a
    # queue they cannot open (runs/test_run_visibility.py: but not to any other).
    queue_a.escalate_to = queue_b
    queue_a.save(update_fields=["escalate_to"])
    return World(users, queue_a, queue_b, request_make(queue=queue_a))


def _client(world: World, persona: str) -> Client:
    client = Client()
    if world.users[persona] is not None:
        client.force_login(world.users[persona])
    return client


def _snapshot(request: ApprovalRequest) -> tuple[Any, ...]:
    request.refresh_from_db()
    return (
        request.state,
        request.queue_id,
        request.args_hash,
        request.claimed_by_id,
        request.claimed_until,
        Decision.objects.count(),
        GoldenCandidate.objects.count(),
        AuditEvent.objects.count(),
        UserObjectPermission.objects.count(),
        GroupObjectPermission.objects.count(),
    )


def _is_login_redirect(response: Any) -> bool:
    return response.status_code == 302 and response["Location"].startswith("/login/?next=")


# --- reading -------------------------------------------------------------------------------

READ_EXPECTED = {
    # persona: (inbox lists the request, detail status)
    "reviewer_a": (True, 200),
    "viewer_a": (True, 200),
    "reviewer_b": (False, 404),
    "operator": (False, 404),
    "auditor": (True, 200),
}


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("htmx", [False, True])
def test_reading_the_inbox_and_a_request(world: World, persona: str, htmx: bool) -> None:
    client = _client(world, persona)
    headers = {"HX-Request": "true"} if htmx else {}
    before = _snapshot(world.request)

    inbox = client.get("/inbox/", headers=headers)
    detail = client.get(f"/inbox/requests/{world.request.pk}/", headers=headers)

    if persona == "anonymous":
        assert _is_login_redirect(inbox)
        assert _is_login_redirect(detail)
    else:
        listed, status = READ_EXPECTED[persona]
        assert inbox.status_code == 200
        assert (f'data-id="{world.request.pk}"' in inbox.content.decode()) is listed
        assert detail.status_code == status
    assert _snapshot(world.request) == before


def test_a_missing_request_is_404_even_for_the_auditor(world: World) -> None:
    client = _client(world, "auditor")
    assert client.get("/inbox/requests/999999/").status_code == 404


# --- deciding ------------------------------------------------------------------------------


def _decision_posts(world: World) -> dict[str, dict[str, Any]]:
    request = world.request
    return {
        "claim": {},
        "approve": {"args_hash": request.args_hash},
        "edit": {
            "edit-args_hash": request.args_hash,
            "args-order_id": "SO-1002",
            "args-amount": "20.00",
            "args-reason": "only the lid broke",
        },
        "reject": {"feedback": "Refund the lid only."},
        "escalate": {"to_queue": world.queue_b.pk, "reason": "needs a senior"},
    }


DECIDE_EXPECTED = {
    "reviewer_a": 302,  # done, back to the inbox
    "viewer_a": 403,
    "reviewer_b": 404,
    "operator": 404,
    "auditor": 403,
}


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("verb", ["claim", "approve", "edit", "reject", "escalate"])
@pytest.mark.parametrize("htmx", [False, True])
def test_deciding_needs_decide_on_the_queue(
    world: World, persona: str, verb: str, htmx: bool
) -> None:
    client = _client(world, persona)
    data = _decision_posts(world)[verb]
    headers = {"HX-Request": "true"} if htmx else {}
    before = _snapshot(world.request)

    response = client.post(f"/inbox/requests/{world.request.pk}/{verb}", data, headers=headers)

    if persona == "anonymous":
        assert _is_login_redirect(response)
    elif persona == "reviewer_a":
        assert response.status_code == (200 if htmx else 302)
        assert _snapshot(world.request) != before
        return
    else:
        assert response.status_code == DECIDE_EXPECTED[persona]
    assert _snapshot(world.request) == before


@pytest.mark.parametrize("persona", PERSONAS)
def test_bulk_approve_needs_decide_on_every_selected_queue(world: World, persona: str) -> None:
    second = request_make(queue=world.queue_a, tool="send_reply", rule="threshold")
    first = request_make(queue=world.queue_a, tool="send_reply", rule="threshold")
    client = _client(world, persona)
    data = {"ids": [first.pk, second.pk], **{f"hash_{r.pk}": r.args_hash for r in (first, second)}}
    before = (_snapshot(first), _snapshot(second))

    response = client.post("/inbox/bulk-approve", data)

    if persona == "anonymous":
        assert _is_login_redirect(response)
    elif persona == "reviewer_a":
        assert response.status_code == 302
        first.refresh_from_db()
        second.refresh_from_db()
        assert (first.state, second.state) == ("approved", "approved")
        return
    else:
        assert response.status_code == DECIDE_EXPECTED[persona]
    assert (_snapshot(first), _snapshot(second)) == before


def test_bulk_approve_with_one_request_of_another_queue_is_404(world: World) -> None:
    mine = request_make(queue=world.queue_a, tool="send_reply", rule="threshold")
    theirs = request_make(queue=world.queue_b, tool="send_reply", rule="threshold")
    client = _client(world, "reviewer_a")
    data = {"ids": [mine.pk, theirs.pk], **{f"hash_{r.pk}": r.args_hash for r in (mine, theirs)}}
    before = (_snapshot(mine), _snapshot(theirs))

    response = client.post("/inbox/bulk-approve", data)

    assert response.status_code == 404
    assert (_snapshot(mine), _snapshot(theirs)) == before


def test_get_on_a_decision_endpoint_is_not_allowed(world: World) -> None:
    client = _client(world, "reviewer_a")
    before = _snapshot(world.request)

    assert client.get(f"/inbox/requests/{world.request.pk}/approve").status_code == 405
    assert _snapshot(world.request) == before


# --- candidates, queues, membership --------------------------------------------------------

CANDIDATES_EXPECTED = {
    "reviewer_a": 403,
    "viewer_a": 403,
    "reviewer_b": 403,
    "operator": 200,
    "auditor": 200,
}


@pytest.mark.parametrize("persona", PERSONAS)
def test_candidates_page(world: World, persona: str) -> None:
    response = _client(world, persona).get("/inbox/candidates/")

    if persona == "anonymous":
        assert _is_login_redirect(response)
    else:
        assert response.status_code == CANDIDATES_EXPECTED[persona]


QUEUES_SEEN = {
    "reviewer_a": {"Queue A"},
    "viewer_a": {"Queue A"},
    "reviewer_b": {"Queue B"},
    "operator": {"Queue A", "Queue B"},  # manages every queue
    "auditor": {"Queue A", "Queue B"},  # sees every queue
}


@pytest.mark.parametrize("persona", PERSONAS)
def test_queues_page_lists_what_each_persona_sees(world: World, persona: str) -> None:
    response = _client(world, persona).get("/inbox/queues/")

    if persona == "anonymous":
        assert _is_login_redirect(response)
        return
    html = response.content.decode()
    assert response.status_code == 200
    assert {name for name in ("Queue A", "Queue B") if f"<strong>{name}</strong>" in html} == (
        QUEUES_SEEN[persona]
    )


MEMBERS_EXPECTED = {
    # persona: (the members page, a grant posted to it)
    "reviewer_a": (403, 403),
    "viewer_a": (403, 403),
    "reviewer_b": (404, 404),
    "operator": (200, 403),  # operators see who reviews; granting is an admin's right
    "auditor": (403, 403),
}


@pytest.mark.parametrize("persona", PERSONAS)
def test_membership_is_managed_by_admins_only(world: World, persona: str) -> None:
    """Invariant 14: who may change permissions is an admin's right, not an operator's."""
    client = _client(world, persona)
    url = f"/inbox/queues/{world.queue_a.pk}/members"
    before = _snapshot(world.request)

    page = client.get(url)
    change = client.post(url, {"principal": "bob", "level": "decide", "action": "grant"})

    if persona == "anonymous":
        assert _is_login_redirect(page)
        assert _is_login_redirect(change)
    else:
        assert (page.status_code, change.status_code) == MEMBERS_EXPECTED[persona]
    if persona == "operator":
        # Refused, and the refusal is the one thing recorded.
        assert 'action="/inbox/queues/' not in page.content.decode()
        refusal = AuditEvent.objects.get(verb="queue.permission_refused")
        assert (refusal.actor_label, refusal.object_id, refusal.after) == (
            "otto",
            str(world.queue_a.pk),
            {
                "asked_for": "bob",
                "permission": "grant decide",
                "reason": "Changing who may see and decide in a queue is an admin's right; "
                "ask an admin.",
            },
        )
        assert _snapshot(world.request)[:-3] == before[:-3]
        assert _snapshot(world.request)[-3:] == (before[-3] + 1, *before[-2:])
        return
    assert _snapshot(world.request) == before


def test_members_of_a_missing_queue_is_404(world: World) -> None:
    assert _client(world, "operator").get("/inbox/queues/999999/members").status_code == 404
