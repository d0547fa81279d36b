"""Changes of who may do what, made in the Django admin, are audit events."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from django.urls import reverse

from agentdesk.roles import roles_sync
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db: None) -> Client:
    ada = User.objects.create_superuser("ada", "ada@example.com", password=None)
    client = Client()
    client.force_login(ada)
    return client


@pytest.fixture
def bob(db: None) -> User:
    return User.objects.create_user("bob", "bob@example.com", password="pw")


def _user_form(user: User, **changes: Any) -> dict[str, Any]:
    """The admin's change form for ``user`` as submitted unchanged, plus ``changes``."""
    data: dict[str, Any] = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on" if user.is_active else "",
        "is_staff": "on" if user.is_staff else "",
        "is_superuser": "on" if user.is_superuser else "",
        "groups": [g.pk for g in user.groups.all()],
        "user_permissions": [p.pk for p in user.user_permissions.all()],
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "initial-date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "initial-date_joined_1": user.date_joined.strftime("%H:%M:%S"),
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v != ""}


def _events() -> list[tuple[str, str, str, Any, Any]]:
    return list(
        AuditEvent.objects.order_by("seq").values_list(
            "actor_label", "verb", "object_id", "before", "after"
        )
    )


def test_giving_a_user_a_role_and_staff_is_one_event_with_before_and_after(
    admin_client: Client, bob: User
) -> None:
    operator = roles_sync()["operator"]
    url = reverse("admin:auth_user_change", args=[bob.pk])

    response = admin_client.post(url, _user_form(bob, groups=[operator.pk], is_staff="on"))

    assert response.status_code == 302, response.content[:2000]
    bob.refresh_from_db()
    assert (bob.is_staff, list(bob.groups.values_list("name", flat=True))) == (True, ["operator"])
    access = {"is_active": True, "is_superuser": False, "user_permissions": []}
    assert _events() == [
        (
            "ada",
            "user.access_changed",
            str(bob.pk),
            {**access, "is_staff": False, "groups": []},
            {**access, "username": "bob", "is_staff": True, "groups": ["operator"]},
        )
    ]


def test_a_change_that_leaves_access_alone_writes_nothing(admin_client: Client, bob: User) -> None:
    url = reverse("admin:auth_user_change", args=[bob.pk])

    response = admin_client.post(url, _user_form(bob, email="robert@example.com"))

    assert response.status_code == 302
    assert User.objects.get(pk=bob.pk).email == "robert@example.com"
    assert _events() == []


def test_a_direct_permission_and_a_deletion_are_events(admin_client: Client, bob: User) -> None:
    promote = Permission.objects.get(content_type__app_label="auth", codename="change_user")
    url = reverse("admin:auth_user_change", args=[bob.pk])
    admin_client.post(url, _user_form(bob, user_permissions=[promote.pk]))

    response = admin_client.post(reverse("admin:auth_user_delete", args=[bob.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not User.objects.filter(pk=bob.pk).exists()
    verbs = [(verb, before, after) for _, verb, _, before, after in _events()]
    assert verbs[0][0] == "user.access_changed"
    assert verbs[0][2]["user_permissions"] == ["auth.change_user"]
    assert verbs[1] == (
        "user.deleted",
        {
            "username": "bob",
            "is_active": True,
            "is_staff": False,
            "is_superuser": False,
            "groups": [],
            "user_permissions": ["auth.change_user"],
        },
        None,
    )


def test_a_group_gaining_a_permission_is_an_event(admin_client: Client) -> None:
    group = Group.objects.create(name="release managers")
    view = Permission.objects.get(content_type__app_label="auth", codename="view_user")
    url = reverse("admin:auth_group_change", args=[group.pk])

    response = admin_client.post(url, {"name": "release managers", "permissions": [view.pk]})

    assert response.status_code == 302
    assert _events() == [
        (
            "ada",
            "group.permissions_changed",
            str(group.pk),
            {"name": "release managers", "permissions": []},
            {"name": "release managers", "permissions": ["auth.view_user"]},
        )
    ]


def test_a_user_created_in_the_admin_is_an_event(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:auth_user_add"),
        {
            "username": "carol",
            "password1": "a-long-enough-password-9",
            "password2": "a-long-enough-password-9",
            "usable_password": "true",
        },
    )

    assert response.status_code == 302, response.content[:3000]
    carol = User.objects.get(username="carol")
    assert [(verb, before, after) for _, verb, _, before, after in _events()] == [
        (
            "user.created",
            None,
            {
                "username": "carol",
                "is_active": True,
                "is_staff": False,
                "is_superuser": False,
                "groups": [],
                "user_permissions": [],
            },
        )
    ]
    assert _events()[0][2] == str(carol.pk)


def test_staff_without_the_permission_cannot_change_access(bob: User) -> None:
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    clerk.user_permissions.add(
        Permission.objects.get(content_type__app_label="auth", codename="view_user")
    )
    client = Client()
    client.force_login(clerk)
    operator = roles_sync()["operator"]

    response = client.post(
        reverse("admin:auth_user_change", args=[bob.pk]),
        _user_form(bob, groups=[operator.pk], is_superuser="on"),
    )

    assert response.status_code == 403
    bob.refresh_from_db()
    assert (bob.is_superuser, bob.groups.count()) == (False, 0)
    assert _events() == []


def test_someone_not_staff_is_sent_to_the_login_page(bob: User) -> None:
    client = Client()
    client.force_login(bob)

    response = client.post(
        reverse("admin:auth_user_change", args=[bob.pk]), _user_form(bob, is_superuser="on")
    )

    assert response.status_code == 302
    assert "/login/" in response["Location"]
    assert User.objects.get(pk=bob.pk).is_superuser is False
    assert _events() == []
