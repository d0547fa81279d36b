"""API tokens: hashed, listed to their owner, revoked, expiring, every issue and revocation
audited; a call refused for want of access does not count as a use.

Personas: Otto (an operator) owns tokens; Rita (a reviewer) owns one of her own; Oscar is
a stranger; an admin revokes from the admin; a management command lists and revokes.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from agentdesk.models import ApiToken
from agentdesk.tokens import TokenRefused, api_token_create, api_token_revoke
from audit.models import AuditEvent
from runs.models import Run
from tests.runs.factories import ticket_input

pytestmark = pytest.mark.django_db


def _api(key: str, path: str = "/api/requests") -> Any:
    return Client().get(path, HTTP_AUTHORIZATION=f"Bearer {key}")


def _events(verb: str) -> list[dict[str, Any]]:
    return list(
        AuditEvent.objects.filter(verb=verb)
        .order_by("seq")
        .values("actor_label", "object_id", "before", "after")
    )


def _snapshot() -> tuple[Any, ...]:
    return (
        AuditEvent.objects.count(),
        list(ApiToken.objects.order_by("pk").values_list("pk", "revoked_at", "last_used_at")),
    )


def test_only_the_keys_hash_is_stored_and_issuing_is_audited(operator: Any) -> None:
    token, key = api_token_create(user=operator, name="ci")

    stored = ApiToken.objects.get()
    assert key.startswith("adk_")
    assert len(key) == 47
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(list(ApiToken.objects.values()))
    assert stored.prefix == key[:12]
    assert _events("api_token.created") == [
        {
            "actor_label": "otto",
            "object_id": str(token.pk),
            "before": None,
            "after": {"user": "otto", "name": "ci", "prefix": key[:12], "expires_at": None},
        }
    ]
    assert key not in str(list(AuditEvent.objects.values("before", "after")))


def test_a_revoked_token_stops_working_at_once(operator: Any) -> None:
    token, key = api_token_create(user=operator, name="ci")
    assert _api(key).status_code == 200

    api_token_revoke(token_id=token.pk, actor=operator, owner=operator)

    response = _api(key)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert _events("api_token.revoked") == [
        {
            "actor_label": "otto",
            "object_id": str(token.pk),
            "before": {"revoked": False},
            "after": {"user": "otto", "name": "ci", "prefix": key[:12], "revoked": True},
        }
    ]


def test_an_expired_token_stops_working(operator: Any) -> None:
    token, key = api_token_create(
        user=operator, name="ci", expires_at=timezone.now() + timedelta(hours=1)
    )
    assert _api(key).status_code == 200

    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert _api(key).status_code == 401
    assert _events("api_token.created")[0]["after"]["expires_at"] == (
        token.expires_at.isoformat() if token.expires_at else None
    )


def test_an_expiry_in_the_past_is_refused_and_creates_nothing(operator: Any) -> None:
    with pytest.raises(TokenRefused, match=r"The expiry must be in the future\."):
        api_token_create(user=operator, name="ci", expires_at=timezone.now())

    assert (ApiToken.objects.count(), AuditEvent.objects.count()) == (0, 0)


def test_a_token_of_a_deactivated_user_stops_working(operator: Any) -> None:
    _, key = api_token_create(user=operator, name="ci")
    get_user_model().objects.filter(pk=operator.pk).update(is_active=False)

    assert _api(key).status_code == 401


@pytest.mark.parametrize(
    "header", ["Bearer adk_not-a-key", "Basic adk_x", "Bearer", "adk_x", "Bearer  "]
)
def test_junk_authorization_is_401_and_touches_nothing(operator: Any, header: str) -> None:
    api_token_create(user=operator, name="ci")
    before = _snapshot()

    response = Client().get("/api/requests", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert _snapshot() == before


# --- last_used_at: written for calls let through, never for a refused probe -------------------


def test_a_call_refused_for_want_of_access_does_not_mark_the_token_used(reviewer: Any) -> None:
    token, key = api_token_create(user=reviewer, name="probe")
    run_path = "/api/runs/00000000-0000-0000-0000-000000000001"
    before = _snapshot()

    denied = [
        Client()
        .post(
            "/api/runs",
            data={"agent": "support", "input": ticket_input()},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {key}",
        )
        .status_code,
        _api(key, run_path).status_code,
        _api(key, "/api/requests/999999").status_code,
    ]

    assert denied == [403, 404, 404]
    assert _snapshot() == before
    assert Run.objects.count() == 0
    token.refresh_from_db()
    assert token.last_used_at is None


def test_a_call_let_through_marks_the_token_used(reviewer: Any) -> None:
    token, key = api_token_create(user=reviewer, name="ok")
    started = timezone.now()

    assert _api(key).status_code == 200

    token.refresh_from_db()
    assert token.last_used_at is not None
    assert started <= token.last_used_at <= timezone.now()


# --- the owner's list and revocation -----------------------------------------------------------


@pytest.fixture
def tokens(operator: Any, reviewer: Any) -> dict[str, Any]:
    otto_ci, _ = api_token_create(user=operator, name="otto-ci")
    otto_old, _ = api_token_create(user=operator, name="otto-old")
    api_token_revoke(token_id=otto_old.pk, actor=operator, owner=operator)
    otto_soon, _ = api_token_create(
        user=operator, name="otto-soon", expires_at=timezone.now() + timedelta(days=1)
    )
    ApiToken.objects.filter(pk=otto_soon.pk).update(expires_at=timezone.now())
    rita, _rita_key = api_token_create(user=reviewer, name="rita-chat")
    return {"otto_ci": otto_ci, "otto_old": otto_old, "otto_soon": otto_soon, "rita": rita}


def _login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_list_shows_ones_own_tokens_and_their_state(
    tokens: dict[str, Any], operator: Any
) -> None:
    response = _login(operator).get("/tokens/")

    html = response.content.decode()
    assert response.status_code == 200
    rows = [(t.name, f'data-token="{t.pk}"' in html) for t in tokens.values()]
    assert rows == [
        ("otto-ci", True),
        ("otto-old", True),
        ("otto-soon", True),
        ("rita-chat", False),
    ]
    assert html.count('class="state state-active"') == 1
    assert html.count('class="state state-revoked"') == 1
    assert html.count('class="state state-expired"') == 1
    # A revoke button for the active and the expired token, none for the revoked one.
    assert html.count('class="danger">Revoke</button>') == 2
    assert "key_hash" not in html
    assert tokens["otto_ci"].key_hash not in html


def test_anonymous_is_sent_to_log_in(tokens: dict[str, Any]) -> None:
    before = _snapshot()

    listing = Client().get("/tokens/")
    revoke = Client().post(f"/tokens/{tokens['otto_ci'].pk}/revoke")

    assert listing.status_code == revoke.status_code == 302
    assert listing["Location"] == "/login/?next=/tokens/"
    assert _snapshot() == before


def test_the_owner_revokes_from_the_page(tokens: dict[str, Any], operator: Any) -> None:
    response = _login(operator).post(f"/tokens/{tokens['otto_ci'].pk}/revoke", follow=True)

    token = ApiToken.objects.get(pk=tokens["otto_ci"].pk)
    assert response.status_code == 200
    assert token.revoked_by == operator
    assert "Revoked otto-ci" in response.content.decode()
    assert [e["object_id"] for e in _events("api_token.revoked")] == [
        str(tokens["otto_old"].pk),
        str(token.pk),
    ]


@pytest.mark.parametrize("persona", ["reviewer", "outsider"])
def test_another_persons_token_is_404_and_stays_as_it_was(
    tokens: dict[str, Any], persona: str, request: pytest.FixtureRequest
) -> None:
    before = _snapshot()

    response = _login(request.getfixturevalue(persona)).post(
        f"/tokens/{tokens['otto_ci'].pk}/revoke"
    )

    assert response.status_code == 404
    assert _snapshot() == before


def test_a_token_that_does_not_exist_is_404(operator: Any) -> None:
    assert _login(operator).post("/tokens/999999/revoke").status_code == 404


def test_revoking_by_get_is_not_allowed(tokens: dict[str, Any], operator: Any) -> None:
    before = _snapshot()

    assert _login(operator).get(f"/tokens/{tokens['otto_ci'].pk}/revoke").status_code == 405
    assert _snapshot() == before


def test_revoking_twice_says_so_and_writes_one_event(tokens: dict[str, Any], operator: Any) -> None:
    before = _snapshot()

    response = _login(operator).post(f"/tokens/{tokens['otto_old'].pk}/revoke", follow=True)

    assert "was already revoked" in response.content.decode()
    assert _snapshot() == before


@pytest.mark.django_db(transaction=True)
def test_two_revocations_at_once_end_the_token_once(operator: Any) -> None:
    token, _ = api_token_create(user=operator, name="ci")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def revoke() -> None:
        barrier.wait()
        try:
            api_token_revoke(token_id=token.pk, actor=operator, owner=operator)
            outcomes.append("revoked")
        except TokenRefused:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=revoke) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["refused", "revoked"]
    assert len(_events("api_token.revoked")) == 1


# --- the command and the admin -----------------------------------------------------------------


def test_the_command_issues_with_an_expiry_lists_and_revokes(operator: Any) -> None:
    out = StringIO()
    call_command(
        "create_api_token", "otto", "--name", "nightly", "--expires-in-days", "7", stdout=out
    )
    key = out.getvalue().strip()
    token = ApiToken.objects.get(name="nightly")
    assert token.expires_at is not None
    assert timedelta(days=6, hours=23) < token.expires_at - token.created_at <= timedelta(days=7)
    assert _api(key).status_code == 200

    listing = StringIO()
    call_command("api_tokens", "list", "--user", "otto", stdout=listing)
    fields = listing.getvalue().strip().split("\t")
    assert fields[:5] == [str(token.pk), f"{token.prefix}…", "otto", "nightly", "active"]
    assert key not in listing.getvalue()

    done = StringIO()
    call_command("api_tokens", "revoke", str(token.pk), stdout=done)
    assert done.getvalue().strip() == f"revoked {token.pk} {token.prefix}… of otto"
    assert _api(key).status_code == 401
    assert _events("api_token.revoked")[0]["actor_label"] == "system"

    with pytest.raises(CommandError, match="already revoked"):
        call_command("api_tokens", "revoke", str(token.pk))
    with pytest.raises(CommandError, match="no API token 999999"):
        call_command("api_tokens", "revoke", "999999")
    with pytest.raises(CommandError, match="--expires-in-days must be 1 or more"):
        call_command("create_api_token", "otto", "--expires-in-days", "0")


def test_an_admin_revokes_from_the_admin_and_cannot_add_change_or_delete(
    tokens: dict[str, Any],
) -> None:
    admin = get_user_model().objects.create_superuser("root", "root@agentdesk.invalid", "pw")
    client = _login(admin)

    assert client.get("/admin/agentdesk/apitoken/").status_code == 200
    assert client.get("/admin/agentdesk/apitoken/add/").status_code == 403
    assert client.post(f"/admin/agentdesk/apitoken/{tokens['rita'].pk}/delete/").status_code == 403
    response = client.post(
        "/admin/agentdesk/apitoken/",
        {"action": "revoke", "_selected_action": [tokens["rita"].pk, tokens["otto_old"].pk]},
        follow=True,
    )

    assert "Revoked 1 token(s)." in response.content.decode()
    rita = ApiToken.objects.get(pk=tokens["rita"].pk)
    assert rita.revoked_by == admin
    assert _events("api_token.revoked")[-1]["actor_label"] == "root"
    assert ApiToken.objects.count() == 4


def test_staff_without_the_permission_may_not_revoke_in_the_admin(tokens: dict[str, Any]) -> None:
    staff = get_user_model().objects.create_user("stan", is_staff=True)
    before = _snapshot()

    response = _login(staff).post(
        "/admin/agentdesk/apitoken/",
        {"action": "revoke", "_selected_action": [tokens["rita"].pk]},
    )

    assert response.status_code == 403
    assert _snapshot() == before
