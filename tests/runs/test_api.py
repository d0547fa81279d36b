"""POST /api/runs and GET /api/runs/<id>: authentication, validation, idempotency."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from agentdesk.tokens import api_token_create
from audit.models import AuditEvent
from runs.models import Run
from tests.runs.factories import ticket_input

pytestmark = pytest.mark.django_db


def _post(client: Client, body: Any, token: str | None, **headers: str) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    extra = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    extra.update({f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()})
    return client.post("/api/runs", data=data, content_type="application/json", **extra)


@pytest.fixture
def token(operator: Any) -> str:
    return api_token_create(user=operator, name="test")[1]


def test_submit_creates_a_queued_run(client: Client, token: str, operator: Any) -> None:
    response = _post(client, {"agent": "support", "input": ticket_input()}, token)

    assert response.status_code == 201
    run = Run.objects.get()
    body = response.json()
    assert body["id"] == str(run.id)
    assert body["state"] == "queued"
    assert (body["release"], body["prompt_version"]) == (1, run.prompt_version)
    assert Run.objects.values_list("release__number", flat=True).get() == 1
    assert run.submitted_by == operator
    assert run.checkpoint["messages"][1] == {
        "role": "user",
        "content": "Ticket T-0001 from jane@example.com\nSubject: Where is my order?\n\n"
        "Hi, order SO-1001 has not arrived yet. Can you check? Jane",
    }
    assert list(AuditEvent.objects.filter(object_type="run").values_list("verb", flat=True)) == [
        "run.submitted"
    ]


def test_same_idempotency_key_returns_the_same_run(client: Client, token: str) -> None:
    body = {"agent": "support", "input": ticket_input()}
    first = _post(client, body, token, **{"Idempotency-Key": "k-1"})
    second = _post(client, body, token, **{"Idempotency-Key": "k-1"})

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert Run.objects.count() == 1


def test_idempotency_key_reused_for_another_request_is_refused(client: Client, token: str) -> None:
    _post(client, {"agent": "support", "input": ticket_input()}, token, **{"Idempotency-Key": "k"})
    other = {"agent": "support", "input": ticket_input(subject="Something else")}
    response = _post(client, other, token, **{"Idempotency-Key": "k"})

    assert response.status_code == 409
    assert "already used for a different request" in response.json()["error"]["message"]
    assert Run.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "the body is not valid JSON"),
        ("[1, 2]", "the body must be a JSON object"),
        ({"input": {}}, "missing field(s): agent"),
        ({"agent": "support"}, "missing field(s): input"),
        ({"agent": "support", "input": {}, "extra": 1}, "unknown field(s): extra"),
        ({"agent": 7, "input": {}}, "'agent' must be a string"),
        ({"agent": "nope", "input": {}}, "unknown agent 'nope'; registered agents: bare, buggy, "),
        ({"agent": "support", "input": "text"}, "input must be a JSON object"),
        (
            {"agent": "support", "input": {"subject": "x"}},
            "input does not match the 'support' agent's input schema",
        ),
    ],
)
def test_bad_input_gets_400_and_creates_nothing(
    client: Client, token: str, body: Any, message: str
) -> None:
    response = _post(client, body, token)

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)
    assert Run.objects.count() == 0
    assert AuditEvent.objects.filter(verb="run.submitted").count() == 0


def test_schema_errors_are_listed(client: Client, token: str) -> None:
    response = _post(client, {"agent": "support", "input": {"subject": "x"}}, token)

    fields = sorted(error["loc"][0] for error in response.json()["error"]["details"])
    assert fields == ["body", "customer_email"]


def test_input_over_the_size_limit_is_refused(client: Client, token: str, settings: Any) -> None:
    settings.AGENTDESK_MAX_INPUT_BYTES = 2000
    body = {"agent": "support", "input": ticket_input(body="x" * 1990)}

    response = _post(client, body, token)

    assert response.status_code == 400
    assert "the limit is 2000 bytes" in response.json()["error"]["message"]
    assert Run.objects.count() == 0


def test_missing_or_wrong_token_is_401(client: Client, token: str) -> None:
    body = {"agent": "support", "input": ticket_input()}

    assert _post(client, body, None).status_code == 401
    assert _post(client, body, "adk_wrong").status_code == 401
    assert _post(client, body, token.replace("adk_", "xyz_")).status_code == 401
    assert Run.objects.count() == 0


def test_token_of_a_user_who_may_not_submit_is_403(client: Client, reviewer: Any) -> None:
    _, key = api_token_create(user=reviewer, name="t")

    response = _post(client, {"agent": "support", "input": ticket_input()}, key)

    assert response.status_code == 403
    assert Run.objects.count() == 0


def test_token_of_an_inactive_user_is_401(client: Client, operator: Any, token: str) -> None:
    operator.is_active = False
    operator.save()

    assert _post(client, {"agent": "support", "input": ticket_input()}, token).status_code == 401


def test_get_run(client: Client, token: str, outsider: Any) -> None:
    run_id = _post(client, {"agent": "support", "input": ticket_input()}, token).json()["id"]

    response = client.get(f"/api/runs/{run_id}", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["release"]) == ("queued", 1)

    _, outsider_key = api_token_create(user=outsider, name="t")
    denied = client.get(f"/api/runs/{run_id}", HTTP_AUTHORIZATION=f"Bearer {outsider_key}")
    assert denied.status_code == 404
