"""The approvals over HTTP: the inbox's rules with a bearer token."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from agentdesk.tokens import api_token_create
from audit.models import AuditEvent
from reviews.models import ApprovalRequest, Decision, Queue, RequestState
from runs.models import Run, RunState
from tests.reviews.factories import queue_make, request_make, user_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def rita(db: None) -> Any:
    return user_make("rita")


@pytest.fixture
def vera(db: None) -> Any:
    return user_make("vera")  # may see the queue, not decide in it


@pytest.fixture
def bob(db: None) -> Any:
    return user_make("bob")  # reviews another queue


@pytest.fixture
def refunds(rita: Any, vera: Any, bob: Any) -> Queue:
    queue_make("other", deciders=(bob,))
    return queue_make("refunds", deciders=(rita,), viewers=(vera,))


@pytest.fixture
def pending(refunds: Queue) -> ApprovalRequest:
    return request_make(queue=refunds)


def _auth(user: Any) -> dict[str, str]:
    _, key = api_token_create(user=user, name="test")
    return {"Authorization": f"Bearer {key}"}


def _decide(
    user: Any, request: ApprovalRequest, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Any:
    return Client().post(
        f"/api/requests/{request.pk}/decision",
        json.dumps(body),
        content_type="application/json",
        headers=headers if headers is not None else _auth(user),
    )


def _unchanged(request: ApprovalRequest) -> None:
    request.refresh_from_db()
    assert request.state == RequestState.PENDING
    assert Decision.objects.filter(request=request).count() == 0
    assert Run.objects.get(pk=request.run_id).state == RunState.WAITING_FOR_APPROVAL


def test_the_list_holds_what_the_user_may_see(
    rita: Any, bob: Any, pending: ApprovalRequest
) -> None:
    mine = Client().get("/api/requests", headers=_auth(rita)).json()["requests"]
    theirs = Client().get("/api/requests", headers=_auth(bob)).json()["requests"]

    assert [r["id"] for r in mine] == [pending.pk]
    assert mine[0]["args_hash"] == pending.args_hash
    assert theirs == []


def test_one_request_in_full(rita: Any, pending: ApprovalRequest) -> None:
    body = Client().get(f"/api/requests/{pending.pk}", headers=_auth(rita)).json()

    assert body["tool"] == "issue_refund"
    assert body["arguments"] == pending.arguments
    assert body["context"]["records"]["order"]["order_id"] == "SO-1002"


def test_approve_with_the_hash_resumes_the_run(rita: Any, pending: ApprovalRequest) -> None:
    response = _decide(rita, pending, {"decision": "approve", "args_hash": pending.args_hash})

    assert response.status_code == 200
    assert response.json()["completed"] is True
    assert Run.objects.get(pk=pending.run_id).state == RunState.RUNNING


def test_approve_with_another_hash_is_refused(rita: Any, pending: ApprovalRequest) -> None:
    response = _decide(rita, pending, {"decision": "approve", "args_hash": "0" * 64})

    assert response.status_code == 400
    assert "arguments changed" in response.json()["error"]["message"]
    _unchanged(pending)


def test_an_invalid_edit_lists_the_field_errors(rita: Any, pending: ApprovalRequest) -> None:
    response = _decide(
        rita,
        pending,
        {
            "decision": "edit",
            "args_hash": pending.args_hash,
            "arguments": {**pending.arguments, "amount": "-1"},
        },
    )

    assert response.status_code == 400
    assert list(response.json()["error"]["details"]) == ["amount"]
    _unchanged(pending)


def test_a_second_decision_is_a_conflict_naming_the_first(
    rita: Any, pending: ApprovalRequest
) -> None:
    _decide(rita, pending, {"decision": "reject", "feedback": "No."})

    response = _decide(rita, pending, {"decision": "approve", "args_hash": pending.args_hash})

    assert response.status_code == 409
    assert response.json()["error"]["message"].startswith("Already rejected by rita")
    assert Decision.objects.filter(request=pending).count() == 1


@pytest.mark.parametrize(
    ("who", "status"), [("vera", 403), ("bob", 404), ("anonymous", 401), ("nonsense", 400)]
)
def test_who_may_not_decide_changes_nothing(
    who: str, status: int, rita: Any, vera: Any, bob: Any, pending: ApprovalRequest
) -> None:
    user = {"vera": vera, "bob": bob, "nonsense": rita}.get(who)
    headers = _auth(user) if user is not None else {}  # creating a token is audited
    body = {"decision": "maybe" if who == "nonsense" else "approve"}
    events = AuditEvent.objects.count()

    response = _decide(user, pending, {**body, "args_hash": pending.args_hash}, headers)

    assert response.status_code == status
    _unchanged(pending)
    assert AuditEvent.objects.count() == events


def test_a_request_the_user_may_not_see_is_404(bob: Any, pending: ApprovalRequest) -> None:
    response = Client().get(f"/api/requests/{pending.pk}", headers=_auth(bob))

    assert response.status_code == 404
