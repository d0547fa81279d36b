"""The inbox through its views: listing, filtering, deciding, bulk approval, candidates.

Decisions go through the real services; the run's continuation is not driven here (see
test_flow.py for park → decide → resume).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from reviews import services
from reviews.models import (
    ApprovalRequest,
    Decision,
    DecisionKind,
    GoldenCandidate,
    Queue,
    RequestState,
)
from tests.reviews.factories import queue_make, request_make, user_make

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def rita(db: None) -> Any:
    return user_make("rita")


@pytest.fixture
def sam(db: None) -> Any:
    return user_make("sam")


@pytest.fixture
def refunds(rita: Any, sam: Any) -> Queue:
    return queue_make("refunds", deciders=(rita, sam))


@pytest.fixture
def seniors(rita: Any) -> Queue:
    return queue_make("refunds-senior", viewers=(rita,))


@pytest.fixture
def pending(refunds: Queue) -> ApprovalRequest:
    return request_make(queue=refunds)


def _as(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _detail(client: Client, request: ApprovalRequest, **headers: str) -> str:
    return client.get(f"/inbox/requests/{request.pk}/", headers=headers).content.decode()


# --- the list ------------------------------------------------------------------------------


def test_the_inbox_lists_pending_requests_soonest_due_first(rita: Any, refunds: Queue) -> None:
    later = request_make(queue=refunds, due_in_minutes=50)
    overdue = request_make(queue=refunds, due_in_minutes=-5)
    sooner = request_make(queue=refunds, due_in_minutes=10)
    decided = request_make(queue=refunds, due_in_minutes=1)
    ApprovalRequest.objects.filter(pk=decided.pk).update(state=RequestState.APPROVED)

    html = _as(rita).get("/inbox/").content.decode()

    order = [html.index(f'data-id="{r.pk}"') for r in (overdue, sooner, later)]
    assert order == sorted(order)
    assert f'data-id="{decided.pk}"' not in html
    assert html.count("is-overdue") == 1
    assert "29.00" in html  # the amount, shown in the row
    assert "<strong>3</strong> pending" in html


def test_htmx_gets_the_list_partial_only(rita: Any, pending: ApprovalRequest) -> None:
    response = _as(rita).get("/inbox/?tool=issue_refund", headers=HTMX)

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="inbox-list"')
    assert "<html" not in html
    # The list re-fetches itself with the same filters.
    assert 'hx-get="/inbox/?tool=issue_refund&amp;page=1"' in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"refund", "reply", "old", "other"}),
        ("tool=send_reply", {"reply"}),
        ("risk=irreversible", {"refund", "old", "other"}),
        ("agent=nobody", set()),
        ("age=60", {"old"}),
        ("queue={other}", {"other"}),
    ],
)
def test_filters(rita: Any, refunds: Queue, query: str, expected: set[str]) -> None:
    other_queue = queue_make("cancellations", deciders=(rita,))
    made = {
        "refund": request_make(queue=refunds),
        "reply": request_make(queue=refunds, tool="send_reply", rule="threshold"),
        "old": request_make(queue=refunds),
        "other": request_make(queue=other_queue),
    }
    ApprovalRequest.objects.filter(pk=made["old"].pk).update(
        created_at=timezone.now() - timedelta(minutes=90)
    )

    html = _as(rita).get(f"/inbox/?{query.format(other=other_queue.pk)}").content.decode()

    assert {name for name, r in made.items() if f'data-id="{r.pk}"' in html} == expected


def test_the_list_shows_who_has_claimed_a_request(
    rita: Any, sam: Any, pending: ApprovalRequest
) -> None:
    services.approval_claim(request_id=pending.pk, user=sam)

    html = _as(rita).get("/inbox/").content.decode()

    assert "sam is on it" in html


def _list_queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/inbox/")
    assert response.status_code == 200
    return len(queries)


def test_the_inbox_costs_the_same_queries_for_5_and_40_requests(rita: Any, refunds: Queue) -> None:
    others = [queue_make(f"q-{n}", deciders=(rita,)) for n in range(3)]
    client = _as(rita)
    for n in range(5):
        request_make(queue=[refunds, *others][n % 4])
    services.approval_claim(request_id=ApprovalRequest.objects.first().pk, user=rita)
    with_5 = _list_queries(client)

    for n in range(35):
        request_make(
            queue=[refunds, *others][n % 4], tool="send_reply" if n % 2 else "issue_refund"
        )
    for request in ApprovalRequest.objects.all()[:10]:
        services.approval_claim(request_id=request.pk, user=rita)
    with_40 = _list_queries(client)

    assert with_40 == with_5
    html = client.get("/inbox/").content.decode()
    assert html.count('<li class="row') == 40


# --- the detail pane -----------------------------------------------------------------------


def test_the_detail_shows_what_a_reviewer_needs(rita: Any, pending: ApprovalRequest) -> None:
    html = _detail(_as(rita), pending)

    for expected in (
        "My teapot arrived shattered",  # the ticket
        "lookup_order",  # what the agent did
        "teapot arrived broken",  # the proposed arguments
        "The teapot arrived broken; refund its price.",  # its reason
        "0.72",  # its confidence
        "issue_refund is irreversible",  # why it is here
        "pol-test",  # the policy version
        "refundable amount",  # the records it touches
        "SO-0999",  # the customer's refund history
        f"/runs/{pending.run_id}/",  # the run
    ):
        assert expected in html, expected


def test_model_output_is_shown_escaped(rita: Any, refunds: Queue) -> None:
    hostile = request_make(
        queue=refunds,
        rationale="<script>alert(1)</script>",
        arguments={
            "order_id": "SO-1002",
            "amount": "1.00",
            "reason": "<img src=x onerror=alert(2)>",
        },
    )

    for html in (_detail(_as(rita), hostile), _detail(_as(rita), hostile, **HTMX)):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<script>alert(1)" not in html
        assert "<img src=x" not in html


def test_the_pane_claims_the_request_when_it_opens(rita: Any, pending: ApprovalRequest) -> None:
    client = _as(rita)
    html = _detail(client, pending, **HTMX)
    assert 'hx-trigger="load"' in html

    response = client.post(f"/inbox/requests/{pending.pk}/claim", headers=HTMX)

    pending.refresh_from_db()
    assert pending.claimed_by == rita
    assert "You are on it" in response.content.decode()
    assert 'hx-trigger="load"' not in response.content.decode()  # no claim loop


def test_a_viewer_sees_no_decision_forms_and_claims_nothing(rita: Any, seniors: Queue) -> None:
    request = request_make(queue=seniors)

    html = _detail(_as(rita), request, **HTMX)

    assert "not decide in it" in html
    assert "/approve" not in html
    assert "/claim" not in html


# --- deciding ------------------------------------------------------------------------------


def test_approve_from_the_pane(rita: Any, pending: ApprovalRequest) -> None:
    response = _as(rita).post(
        f"/inbox/requests/{pending.pk}/approve", {"args_hash": pending.args_hash}, headers=HTMX
    )

    pending.refresh_from_db()
    assert (pending.state, pending.outcome) == ("approved", "approved")
    assert response.status_code == 200
    assert "Approved." in response.content.decode()
    assert json.loads(response["HX-Trigger"]) == {"inbox-changed": {"request": pending.pk}}
    decision = Decision.objects.get(request=pending)
    assert (decision.kind, decision.decided_by, decision.args_hash) == (
        "approve",
        rita,
        pending.args_hash,
    )


def test_approve_without_javascript_redirects_with_a_message(
    rita: Any, pending: ApprovalRequest
) -> None:
    client = _as(rita)
    response = client.post(
        f"/inbox/requests/{pending.pk}/approve", {"args_hash": pending.args_hash}
    )

    assert response.status_code == 302
    assert response["Location"] == "/inbox/"
    assert f"Request {pending.pk}: approved." in client.get("/inbox/").content.decode()


def test_an_approval_of_a_stale_hash_is_refused(rita: Any, pending: ApprovalRequest) -> None:
    response = _as(rita).post(f"/inbox/requests/{pending.pk}/approve", {"args_hash": "0" * 64})

    assert response.status_code == 400
    assert "arguments changed" in response.content.decode()
    pending.refresh_from_db()
    assert pending.state == RequestState.PENDING
    assert Decision.objects.count() == 0


def _edit(pending: ApprovalRequest, **arguments: str) -> dict[str, str]:
    values = {**pending.arguments, **arguments}
    return {
        "edit-args_hash": pending.args_hash,
        "edit-note": "only the lid",
        **{f"args-{key}": value for key, value in values.items()},
    }


def test_the_edit_form_is_generated_from_the_tool_schema(
    rita: Any, pending: ApprovalRequest
) -> None:
    html = _detail(_as(rita), pending, **HTMX)

    assert '<input type="text" name="args-order_id" value="SO-1002" required' in html
    assert '<input type="text" name="args-amount" value="29.00" inputmode="decimal"' in html
    assert '<textarea name="args-reason" cols="40" rows="2" maxlength="500"' in html
    # The proposed call lists the arguments as the tool declares them.
    assert html.index('<th scope="row">order_id') < html.index('<th scope="row">amount')


def test_edit_approves_the_edited_arguments_and_files_a_candidate(
    rita: Any, pending: ApprovalRequest
) -> None:
    response = _as(rita).post(
        f"/inbox/requests/{pending.pk}/edit", _edit(pending, amount="20.5"), headers=HTMX
    )

    assert response.status_code == 200
    pending.refresh_from_db()
    assert (pending.state, pending.outcome) == ("approved", "edited")
    assert pending.arguments == {
        "order_id": "SO-1002",
        "amount": "20.5",
        "reason": "teapot arrived broken",
    }
    candidate = GoldenCandidate.objects.get(request=pending)
    assert candidate.correction == {"kind": "edit", "arguments": pending.arguments}
    assert candidate.reason == "only the lid"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("amount", "-5", "greater than 0"),  # pydantic, through the service
        ("amount", "ten", "Enter a number."),  # the form
        ("order_id", "1002", "Must match"),  # the form, from the schema's pattern
        ("reason", "", "This field is required."),
    ],
)
def test_an_invalid_edit_shows_errors_and_saves_nothing(
    rita: Any, pending: ApprovalRequest, field: str, value: str, message: str
) -> None:
    before = (pending.arguments, pending.args_hash)
    audit_before = AuditEvent.objects.count()

    response = _as(rita).post(
        f"/inbox/requests/{pending.pk}/edit", _edit(pending, **{field: value})
    )

    assert response.status_code == 400
    assert message in response.content.decode()
    assert 'class="has-error"' in response.content.decode()
    pending.refresh_from_db()
    assert (pending.arguments, pending.args_hash, pending.state) == (*before, "pending")
    assert Decision.objects.count() == 0
    assert GoldenCandidate.objects.count() == 0
    assert AuditEvent.objects.count() == audit_before


def test_an_unchanged_edit_is_refused(rita: Any, pending: ApprovalRequest) -> None:
    response = _as(rita).post(f"/inbox/requests/{pending.pk}/edit", _edit(pending), headers=HTMX)

    assert "approve instead of editing" in response.content.decode()
    assert Decision.objects.count() == 0


def test_reject_needs_feedback_and_returns_it(rita: Any, pending: ApprovalRequest) -> None:
    client = _as(rita)

    empty = client.post(f"/inbox/requests/{pending.pk}/reject", {"feedback": "   "})
    assert empty.status_code == 400
    assert "This field is required." in empty.content.decode()
    assert Decision.objects.count() == 0

    done = client.post(f"/inbox/requests/{pending.pk}/reject", {"feedback": "Refund the lid only."})
    assert done.status_code == 302
    pending.refresh_from_db()
    assert (pending.state, pending.feedback) == ("rejected", "Refund the lid only.")
    candidate = GoldenCandidate.objects.get(request=pending)
    assert candidate.correction == {"kind": "reject", "feedback": "Refund the lid only."}


def test_escalate_moves_the_request(rita: Any, pending: ApprovalRequest, seniors: Queue) -> None:
    html = _detail(_as(rita), pending)
    assert f'<option value="{seniors.pk}"' in html

    response = _as(rita).post(
        f"/inbox/requests/{pending.pk}/escalate",
        {"to_queue": seniors.pk, "reason": "over my limit"},
        headers=HTMX,
    )

    pending.refresh_from_db()
    assert (pending.queue, pending.state) == (seniors, "pending")
    decision = Decision.objects.get(request=pending)
    assert (decision.kind, decision.to_queue, decision.reason) == (
        DecisionKind.ESCALATE,
        seniors,
        "over my limit",
    )
    # Rita only views the senior queue: the pane shows the request, without decision forms.
    assert "Escalated to Refunds Senior." in response.content.decode()
    assert "not decide in it" in response.content.decode()


def test_escalate_needs_a_reason(rita: Any, pending: ApprovalRequest, seniors: Queue) -> None:
    response = _as(rita).post(
        f"/inbox/requests/{pending.pk}/escalate", {"to_queue": seniors.pk, "reason": ""}
    )

    assert response.status_code == 400
    pending.refresh_from_db()
    assert pending.queue_id != seniors.pk
    assert Decision.objects.count() == 0


def test_the_second_reviewer_is_told_who_decided(
    rita: Any, sam: Any, pending: ApprovalRequest
) -> None:
    _as(sam).post(f"/inbox/requests/{pending.pk}/approve", {"args_hash": pending.args_hash})
    pending.refresh_from_db()
    at = timezone.localtime(pending.decided_at).strftime("%H:%M")

    plain = _as(rita).post(
        f"/inbox/requests/{pending.pk}/approve", {"args_hash": pending.args_hash}
    )
    htmx = _as(rita).post(f"/inbox/requests/{pending.pk}/reject", {"feedback": "no"}, headers=HTMX)

    assert plain.status_code == 409
    assert htmx.status_code == 200
    for response in (plain, htmx):
        assert f"Already approved by sam at {at}" in response.content.decode()
    assert Decision.objects.filter(request=pending).count() == 1


def test_a_two_person_request_waits_for_a_second_approver(
    rita: Any, sam: Any, refunds: Queue
) -> None:
    request = request_make(queue=refunds, approvals_required=2)

    first = _as(rita).post(
        f"/inbox/requests/{request.pk}/approve", {"args_hash": request.args_hash}, headers=HTMX
    )
    again = _as(rita).post(
        f"/inbox/requests/{request.pk}/approve", {"args_hash": request.args_hash}, headers=HTMX
    )
    second = _as(sam).post(
        f"/inbox/requests/{request.pk}/approve", {"args_hash": request.args_hash}, headers=HTMX
    )

    assert "waiting for another reviewer" in first.content.decode()
    assert "a second person must approve" in again.content.decode()
    assert "Approved." in second.content.decode()
    request.refresh_from_db()
    assert request.state == RequestState.APPROVED
    assert Decision.objects.filter(request=request).count() == 2


# --- bulk ----------------------------------------------------------------------------------


def _bulk(*requests: ApprovalRequest) -> dict[str, Any]:
    return {"ids": [r.pk for r in requests], **{f"hash_{r.pk}": r.args_hash for r in requests}}


def test_bulk_approve_of_low_risk_requests_of_one_tool_and_rule(rita: Any, refunds: Queue) -> None:
    replies = [request_make(queue=refunds, tool="send_reply", rule="threshold") for _ in range(3)]

    response = _as(rita).post("/inbox/bulk-approve", _bulk(*replies), headers=HTMX)

    assert "Approved 3 requests." in response.content.decode()
    assert "inbox-changed" in response["HX-Trigger"]
    states = set(
        ApprovalRequest.objects.filter(pk__in=[r.pk for r in replies]).values_list(
            "state", flat=True
        )
    )
    assert states == {"approved"}


@pytest.mark.parametrize(
    ("kinds", "message"),
    [
        (["issue_refund", "issue_refund"], "irreversible calls and two-person rules"),
        (["send_reply", "issue_refund"], "one tool under one rule"),
    ],
)
def test_bulk_approve_is_refused_for_irreversible_or_mixed_tools(
    rita: Any, refunds: Queue, kinds: list[str], message: str
) -> None:
    requests = [
        request_make(queue=refunds, tool=tool, rule="threshold" if tool == "send_reply" else "risk")
        for tool in kinds
    ]
    client = _as(rita)

    response = client.post("/inbox/bulk-approve", _bulk(*requests))

    assert response.status_code == 302
    assert message in client.get("/inbox/").content.decode()
    assert ApprovalRequest.objects.filter(state="pending").count() == len(requests)
    assert Decision.objects.count() == 0


def test_bulk_approve_is_refused_when_a_request_changed(rita: Any, refunds: Queue) -> None:
    replies = [request_make(queue=refunds, tool="send_reply", rule="threshold") for _ in range(2)]
    data = _bulk(*replies)
    data[f"hash_{replies[1].pk}"] = "stale"

    response = _as(rita).post("/inbox/bulk-approve", data, headers=HTMX)

    assert f"Request {replies[1].pk} changed since you saw it." in response.content.decode()
    assert Decision.objects.count() == 0


# --- candidates and membership -------------------------------------------------------------


def test_candidates_show_proposal_and_correction(rita: Any, pending: ApprovalRequest) -> None:
    services.approval_reject(request_id=pending.pk, user=rita, feedback="Only <b>the lid</b>.")
    operator = user_make("otto", "operator")

    auditor = user_make("aude", "auditor")

    html = _as(operator).get("/inbox/candidates/").content.decode()

    assert "My teapot arrived shattered" in html
    assert "teapot arrived broken" in html  # the proposal
    assert "Only &lt;b&gt;the lid&lt;/b&gt;." in html  # the correction, escaped
    assert f"/runs/{pending.run_id}/" in html
    # The operator does not see the refunds queue: no link to a page that would be a 404.
    assert f"/inbox/requests/{pending.pk}/" not in html
    assert (
        f"/inbox/requests/{pending.pk}/" in _as(auditor).get("/inbox/candidates/").content.decode()
    )


def test_candidates_mark_the_edited_arguments(rita: Any, pending: ApprovalRequest) -> None:
    services.approval_edit(
        request_id=pending.pk,
        user=rita,
        seen_hash=pending.args_hash,
        arguments={**pending.arguments, "amount": "9.00"},
    )

    html = _as(user_make("otto", "operator")).get("/inbox/candidates/").content.decode()

    assert html.count('class="badge badge-changed"') == 1
    assert '<tr class="changed"><th scope="row">amount</th><td>9.00' in html


def test_an_access_admin_grants_and_revokes_queue_access(refunds: Queue) -> None:
    operator = user_make("ada", "access_admin")
    newcomer = user_make("nina")
    request = request_make(queue=refunds)
    url = f"/inbox/queues/{refunds.pk}/members"
    client = _as(operator)
    assert _as(newcomer).get(f"/inbox/requests/{request.pk}/").status_code == 404

    client.post(url, {"principal": "nina", "level": "decide", "action": "grant"})
    assert _as(newcomer).get(f"/inbox/requests/{request.pk}/").status_code == 200
    assert "nina" in client.get(url).content.decode()

    client.post(url, {"principal": "nina", "level": "decide", "action": "revoke"})
    approve = _as(newcomer).post(
        f"/inbox/requests/{request.pk}/approve", {"args_hash": request.args_hash}
    )
    assert approve.status_code == 403

    client.post(url, {"principal": "nina", "level": "view", "action": "revoke"})
    assert _as(newcomer).get(f"/inbox/requests/{request.pk}/").status_code == 404

    events = list(
        AuditEvent.objects.filter(verb__startswith="queue.permission")
        .order_by("id")
        .values_list("verb", "after")
    )
    assert events == [
        ("queue.permission_granted", {"user": "nina", "permission": "view_queue", "holds": True}),
        ("queue.permission_granted", {"user": "nina", "permission": "decide_queue", "holds": True}),
        (
            "queue.permission_revoked",
            {"user": "nina", "permission": "decide_queue", "holds": False},
        ),
        ("queue.permission_revoked", {"user": "nina", "permission": "view_queue", "holds": False}),
    ]


def test_granting_to_a_group(refunds: Queue) -> None:
    operator = user_make("ada", "access_admin")
    member = user_make("gail")  # in the reviewer group
    request = request_make(queue=refunds)

    response = _as(operator).post(
        f"/inbox/queues/{refunds.pk}/members",
        {"principal": "group:reviewer", "level": "view", "action": "grant"},
    )

    assert response.status_code == 302
    assert _as(member).get(f"/inbox/requests/{request.pk}/").status_code == 200


def test_granting_to_an_unknown_user_is_a_form_error(refunds: Queue) -> None:
    operator = user_make("ada", "access_admin")

    response = _as(operator).post(
        f"/inbox/queues/{refunds.pk}/members",
        {"principal": "ghost", "level": "view", "action": "grant"},
    )

    assert response.status_code == 400
    assert "No active user has that username." in response.content.decode()
    assert AuditEvent.objects.count() == 0


def test_live_updates_use_sockets_with_redis_and_polling_without(
    rita: Any, refunds: Queue, seniors: Queue, settings: Any
) -> None:
    client = _as(rita)

    live = client.get("/inbox/").content.decode()
    settings.REDIS_URL = ""
    embedded = client.get("/inbox/").content.decode()

    ids = sorted([refunds.pk, seniors.pk])
    assert 'data-live="socket"' in live
    assert f'data-queues="{ids[0]},{ids[1]}"' in live
    assert "every 5s" not in live
    assert 'data-live="poll"' in embedded
    assert "every 5s" in embedded
