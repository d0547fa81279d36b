"""Bad input is a 400 that says what is wrong, and writes nothing (invariant 10).

Each case is one found by hand before the property test (test_no_5xx_property.py) was
written: a NUL character or a lone surrogate in a run's input, JSON nested to the
recursion limit, NUL in a query string, a number out of range, a non-numeric id in the
admin's object permission pages. Every refusal is checked against a fingerprint of every
table (tests/snapshot.py): nothing written, not even an audit event.

Invariant 9 holds on the same endpoints: without access a bad body is a 404, with read
only a 403, before the body is read.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.utils.html import escape

from agentdesk.json_input import MAX_DEPTH, JSONInputInvalid, json_object_parse
from agentdesk.tokens import api_token_create
from reviews.forms import SchemaForm
from reviews.models import ApprovalRequest, Queue
from runs.models import Run
from tests.reviews.factories import queue_make, request_make, user_make
from tests.runs.factories import ticket_input
from tests.snapshot import changed_tables, db_snapshot

pytestmark = pytest.mark.django_db


def _bearer(user: Any) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}


def _post_raw(client: Client, path: str, body: bytes | str, auth: dict[str, str]) -> Any:
    return client.post(path, data=body, content_type="application/json", **auth)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- the JSON boundary itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"a": "x\\u0000y"}', "the text at $.a contains a NUL character (\\u0000)"),
        ('{"a\\u0000": 1}', "a key in $ contains a NUL character (\\u0000)"),
        (
            '{"a": ["ok", "\\ud800"]}',
            "the text at $.a[1] contains a lone surrogate (\\ud800-\\udfff), "
            "which is not valid Unicode",
        ),
        ('{"a": NaN}', "NaN is not a JSON number"),
        ('{"a": -Infinity}', "-Infinity is not a JSON number"),
        ('{"a": 1e999}', "the number 1e999 is too large"),
        ("[1]", "the body must be a JSON object"),
        ('{"a": ' + _nested(MAX_DEPTH) + "}", f"$.a{'[0]' * (MAX_DEPTH - 1)} is nested more"),
        (_nested(100_000), "the body is nested too deeply (the limit is 32 levels)"),
        (b'{"a": "\xff"}', "the body is not valid JSON: 'utf-8' codec can't decode byte 0xff"),
    ],
)
def test_inv10_json_boundary_names_the_problem(raw: str | bytes, message: str) -> None:
    with pytest.raises(JSONInputInvalid) as caught:
        json_object_parse(raw)

    assert str(caught.value).startswith(message)


def test_inv10_json_boundary_accepts_the_deepest_allowed_and_ordinary_text() -> None:
    deepest = '{"a": ' + _nested(MAX_DEPTH - 1) + "}"
    assert json_object_parse(deepest)["a"] == json.loads(_nested(MAX_DEPTH - 1))
    assert json_object_parse('{"a": "Grüße \\ud83d\\ude00 \\t"}') == {"a": "Grüße 😀 \t"}


def test_inv10_json_form_field_refuses_and_shows_the_form_again() -> None:
    """The edit form's JSON field: a refusal is a form error, and the page still renders."""
    schema = {"properties": {"items": {"type": "array"}}, "required": ["items"]}
    for text, message in (
        ('["\\u0000"]', "the text at $[0] contains a NUL character"),
        (_nested(5000), "the value is nested too deeply"),
        ('["\\udfff"]', "the text at $[0] contains a lone surrogate"),
    ):
        form = SchemaForm({"args-items": text}, schema=schema)

        assert not form.is_valid()
        assert form.errors["items"][0].startswith(message)
        assert escape(text)[:40] in str(form)  # re-rendered as typed, no RecursionError


# --- POST /api/runs ------------------------------------------------------------------------


@pytest.fixture
def operator_auth(operator: Any) -> dict[str, str]:
    return _bearer(operator)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("body", "Hello\u0000", "the text at $.input.body contains a NUL character (\\u0000)"),
        ("subject", "\ud800", "the text at $.input.subject contains a lone surrogate"),
    ],
)
def test_inv10_run_input_with_nul_or_lone_surrogate_is_400_and_writes_nothing(
    client: Client, operator_auth: dict[str, str], field: str, value: str, message: str
) -> None:
    # json.dumps escapes both as \u0000 and \ud800, exactly as a client would send them.
    body = json.dumps({"agent": "support", "input": ticket_input(**{field: value})})
    before = db_snapshot()

    response = _post_raw(client, "/api/runs", body, operator_auth)

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)
    assert list(response.json()["error"]) == ["message"]
    assert changed_tables(before, db_snapshot()) == []


def test_inv10_run_input_nested_to_the_recursion_limit_is_400(
    client: Client, operator_auth: dict[str, str]
) -> None:
    # Under the size limit (64 KiB), far over Python's recursion limit.
    body = '{"agent": "support", "input": {"x": ' + _nested(30_000) + "}}"
    before = db_snapshot()

    response = _post_raw(client, "/api/runs", body, operator_auth)

    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "the body is nested too deeply (the limit is 32 levels)"
    )
    assert Run.objects.count() == 0
    assert changed_tables(before, db_snapshot()) == []


def test_inv10_a_refused_submission_does_not_take_its_idempotency_key(
    client: Client, operator_auth: dict[str, str]
) -> None:
    key = {"HTTP_IDEMPOTENCY_KEY": "ticket-T-0001"}
    bad = json.dumps({"agent": "support", "input": ticket_input(body="\u0000")})
    good = json.dumps({"agent": "support", "input": ticket_input()})

    refused = _post_raw(client, "/api/runs", bad, {**operator_auth, **key})
    accepted = _post_raw(client, "/api/runs", good, {**operator_auth, **key})

    assert (refused.status_code, accepted.status_code) == (400, 201)
    assert list(Run.objects.values_list("idempotency_key", flat=True)) == ["ticket-T-0001"]


@pytest.mark.django_db(transaction=True)
def test_inv10_two_clients_at_once_one_bad_one_good_one_run(operator: Any) -> None:
    """Two submissions at once under one key, one with a NUL: one run, no 500."""
    auth = {**_bearer(operator), "HTTP_IDEMPOTENCY_KEY": "same-key"}
    bodies = [
        json.dumps({"agent": "support", "input": ticket_input(body="\u0000")}),
        json.dumps({"agent": "support", "input": ticket_input()}),
    ]
    statuses: list[int] = []
    start = threading.Barrier(2)

    def submit(body: str) -> None:
        start.wait()
        try:
            statuses.append(_post_raw(Client(), "/api/runs", body, auth).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(statuses) == [201, 400]
    assert Run.objects.count() == 1


# --- POST /api/requests/<id>/decision --------------------------------------------------------


@pytest.fixture
def review() -> dict[str, Any]:
    rita, vera, oscar = user_make("rita"), user_make("vera"), user_make("oscar")
    queue = queue_make("refunds", deciders=(rita,), viewers=(vera,))
    return {"rita": rita, "vera": vera, "oscar": oscar, "request": request_make(queue=queue)}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"decision": "reject", "feedback": ' + _nested(20_000) + "}", "the body is nested"),
        (
            '{"decision": "reject", "feedback": "no\\u0000"}',
            "the text at $.feedback contains a NUL",
        ),
        (
            '{"decision": "edit", "args_hash": "x", "arguments": {"reason": "\\udc00"}}',
            "the text at $.arguments.reason contains a lone surrogate",
        ),
    ],
)
def test_inv10_decision_with_a_bad_body_is_400_and_the_request_stays_pending(
    client: Client, review: dict[str, Any], body: str, message: str
) -> None:
    approval: ApprovalRequest = review["request"]
    auth = _bearer(review["rita"])
    before = db_snapshot()

    response = _post_raw(client, f"/api/requests/{approval.pk}/decision", body, auth)

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)
    assert changed_tables(before, db_snapshot()) == []


@pytest.mark.parametrize(("persona", "status"), [("oscar", 404), ("vera", 403)])
def test_inv9_a_bad_body_from_someone_who_may_not_decide_is_404_or_403(
    client: Client, review: dict[str, Any], persona: str, status: int
) -> None:
    approval: ApprovalRequest = review["request"]
    auth = _bearer(review[persona])
    before = db_snapshot()

    response = _post_raw(client, f"/api/requests/{approval.pk}/decision", _nested(20_000), auth)

    assert response.status_code == status
    assert changed_tables(before, db_snapshot()) == []


# --- query strings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("tool=%00", "tool: Null characters are not allowed."),
        ("agent=%00", "agent: Null characters are not allowed."),
        ("risk=read%00", "risk: Null characters are not allowed."),
        ("age=10000000000", "age: Ensure this value is less than or equal to 5270400."),
        ("age=abc", "age: Enter a whole number."),
        ("queue=0", "queue: Ensure this value is greater than or equal to 1."),
    ],
)
def test_inv10_inbox_query_with_nul_or_out_of_range_number_is_400(
    client: Client, review: dict[str, Any], query: str, message: str
) -> None:
    client.force_login(review["rita"])
    before = db_snapshot()

    response = client.get(f"/inbox/?{query}")

    assert response.status_code == 400
    html = response.content.decode()
    assert f"This address has a bad parameter. {message}" in html
    assert "AgentDesk cannot read this request" in html
    assert changed_tables(before, db_snapshot()) == []


def test_inv10_inbox_filters_that_match_nothing_are_still_valid(
    client: Client, review: dict[str, Any]
) -> None:
    client.force_login(review["rita"])

    response = client.get("/inbox/?agent=nobody&tool=no_such_tool&age=5270400&queue=99999999999")

    assert response.status_code == 200
    assert f'data-id="{review["request"].pk}"' not in response.content.decode()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("demo=%00", "demo: Null characters are not allowed. Enter a valid value."),
        ("demo=T%201", "demo: Enter a valid value."),
        ("agent=nobody", "agent: Select a valid choice. nobody is not one of the available"),
    ],
)
def test_inv10_submit_page_with_a_bad_demo_parameter_is_400(
    client: Client, operator: Any, query: str, message: str
) -> None:
    client.force_login(operator)

    response = client.get(f"/runs/new/?{query}")

    assert response.status_code == 400
    assert f"This address has a bad parameter. {message}" in response.content.decode()


def test_inv10_submit_page_with_an_unknown_demo_prefills_nothing(
    client: Client, operator: Any
) -> None:
    client.force_login(operator)

    response = client.get("/runs/new/?demo=T-9999")

    assert response.status_code == 200
    assert 'name="ticket_id"' in response.content.decode()
    assert response.context["form"].initial == {"agent": "support"}


# --- the admin's object permission pages ---------------------------------------------------


@pytest.fixture
def admin_client(client: Client) -> Client:
    admin = get_user_model().objects.create_superuser("root", "root@example.com", None)
    client.force_login(admin)
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/admin/reviews/queue/abc/permissions/",
        "/admin/reviews/queue/1%00/permissions/",
        "/admin/reviews/queue/{queue}/permissions/user-manage/abc/",
        "/admin/reviews/queue/{queue}/permissions/group-manage/%C2%B2/",
        "/admin/reviews/queue/abc/permissions/user-manage/{user}/",
    ],
)
def test_inv10_admin_object_permission_pages_with_a_non_numeric_id_are_404(
    admin_client: Client, review: dict[str, Any], path: str
) -> None:
    queue = Queue.objects.get()
    url = path.format(queue=queue.pk, user=review["rita"].pk)
    before = db_snapshot()

    get = admin_client.get(url)
    post = admin_client.post(url, {"permissions": ["decide_queue"], "user": "rita"})

    assert (get.status_code, post.status_code) == (404, 404)
    assert changed_tables(before, db_snapshot()) == []


def test_inv10_admin_object_permission_page_with_a_real_id_still_works(
    admin_client: Client, review: dict[str, Any]
) -> None:
    queue = Queue.objects.get()

    response = admin_client.get(
        f"/admin/reviews/queue/{queue.pk}/permissions/user-manage/{review['rita'].pk}/"
    )

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/agents/support/versions/1/?against=%C2%B2", "against: Enter a whole number."),
        ("/prompts/support/versions/1/?against=%C2%B2", "against: Enter a whole number."),
        ("/prompts/support/new?from=%C2%B2", "from: Enter a whole number."),
        ("/audit/?before=" + "9" * 5000, "before: Enter a whole number."),
        (
            "/audit/?after=99999999999999999999",
            "after: Ensure this value is less than or equal to 9223372036854775807.",
        ),
    ],
)
def test_inv10_a_number_str_isdigit_accepts_but_int_refuses_is_400(
    client: Client, path: str, message: str
) -> None:
    """Found by the property test: ``"²".isdigit()`` is true, ``int("²")`` raises."""
    from releases import services

    admin = get_user_model().objects.create_superuser("root", "root@example.com", None)
    services.release_labels(agent_name="support")  # the versions 1 and release 1 pages name
    client.force_login(admin)
    before = db_snapshot()

    response = client.get(path)

    assert response.status_code == 400
    assert f"This address has a bad parameter. {message}" in response.content.decode()
    assert changed_tables(before, db_snapshot()) == []
