"""Logins and logouts are audit events; a failed login changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_a_login_and_a_logout_are_audited(reviewer: Any) -> None:
    client = Client()

    response = client.post("/login/", {"username": "rita", "password": "pw"})
    assert response.status_code == 302
    client.post("/logout/")

    events = list(
        AuditEvent.objects.filter(object_type="user")
        .order_by("seq")
        .values_list("verb", "actor_label", "object_id")
    )
    assert events == [
        ("user.logged_in", "rita", str(reviewer.pk)),
        ("user.logged_out", "rita", str(reviewer.pk)),
    ]


def test_a_failed_login_writes_nothing_and_logs_in_no_one(reviewer: Any) -> None:
    client = Client()
    before = AuditEvent.objects.count()

    response = client.post("/login/", {"username": "rita", "password": "wrong"})

    assert response.status_code == 200
    assert AuditEvent.objects.count() == before
    assert client.get("/inbox/").status_code == 302  # still anonymous: sent to log in
