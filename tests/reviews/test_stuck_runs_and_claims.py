"""A run that needs a person, as a reviewer sees and decides it; claims; where people land."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from reviews import services
from reviews.models import ApprovalRequest, Queue, RequestKind
from runs.models import Run, RunState
from tests.reviews.factories import queue_make, request_make, user_make

pytestmark = pytest.mark.django_db

ERROR = {"class": "model_refusal", "message": "every link of the fallback chain failed"}


@pytest.fixture
def rita(db: None) -> Any:
    return user_make("rita")


@pytest.fixture
def support(rita: Any) -> Queue:
    return queue_make("support", deciders=(rita,))


def _stuck(queue: Queue) -> ApprovalRequest:
    run = Run.objects.create(
        agent_name="support",
        input={"ticket_id": "T-0002", "subject": "Teapot", "body": "Broken."},
        state=RunState.NEEDS_HUMAN,
        error=ERROR,
        trace_id=uuid.uuid4().hex,
        prompt_version="test",
        model="test-model",
        request_hash=uuid.uuid4().hex,
        checkpoint={"messages": [], "pending_actions": [], "link": 3},
    )
    return ApprovalRequest.objects.create(
        kind=RequestKind.RUN,
        queue=queue,
        run=run,
        agent_name="support",
        tool="",
        risk="",
        arguments={},
        args_hash=services.request_hash("", {}),
        rule=ERROR["class"],
        routing_reason=ERROR["message"],
        policy_version="pol-test",
        context={"input": run.input, "history": [], "error": ERROR},
        due_at=timezone.now() + timedelta(minutes=30),
    )


def _as(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_stuck_run_is_shown_with_its_error_and_two_choices(rita: Any, support: Queue) -> None:
    request = _stuck(support)

    html = _as(rita).get(f"/inbox/requests/{request.pk}/").content.decode()

    assert "Run needs a person" in html
    assert "every link of the fallback chain failed" in html
    assert "Resume the run" in html
    assert "End the run" in html
    assert "Edit, then approve" not in html
    listing = _as(rita).get("/inbox/").content.decode()
    assert "run needs a person" in listing


def test_resuming_a_stuck_run_from_the_inbox(rita: Any, support: Queue) -> None:
    request = _stuck(support)

    response = _as(rita).post(
        f"/inbox/requests/{request.pk}/approve", {"args_hash": request.args_hash}
    )

    assert response.status_code == 302
    run = Run.objects.get(pk=request.run_id)
    assert (run.state, run.error, run.checkpoint["link"]) == (RunState.RUNNING, None, 0)


def test_an_edit_of_a_stuck_run_is_refused_and_changes_nothing(rita: Any, support: Queue) -> None:
    request = _stuck(support)

    with pytest.raises(services.DecisionRefused):
        services.approval_edit(
            request_id=request.pk, user=rita, seen_hash=request.args_hash, arguments={"x": 1}
        )

    request.refresh_from_db()
    assert request.is_pending
    assert request.decisions.count() == 0


def test_opening_the_next_request_releases_the_claim_on_the_last(rita: Any, support: Queue) -> None:
    first, second = request_make(queue=support), request_make(queue=support)
    other = user_make("sam")
    theirs = request_make(queue=support)
    services.approval_claim(request_id=theirs.pk, user=other)

    services.approval_claim(request_id=first.pk, user=rita)
    services.approval_claim(request_id=second.pk, user=rita)

    first.refresh_from_db()
    second.refresh_from_db()
    theirs.refresh_from_db()
    assert first.claimed_until is None
    assert second.claimed_by == rita
    assert second.claimed_until is not None
    assert theirs.claimed_by == other  # someone else's claim is theirs to keep
    assert theirs.claimed_until is not None


def test_a_reviewer_lands_in_the_inbox_and_others_on_the_runs(rita: Any, support: Queue) -> None:
    operator = user_make("otto", role="operator")

    assert _as(rita).get("/").url == "/inbox/"
    assert _as(operator).get("/").url == "/runs/"
    assert Client().get("/").url.startswith("/login/")
