"""The Django admin: queues and their object permissions; requests and decisions read only."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from guardian.shortcuts import get_group_perms, get_user_perms

from audit.models import AuditEvent
from reviews import services
from reviews.models import (
    ApprovalRequest,
    CandidateStatus,
    Decision,
    DecisionKind,
    GoldenCandidate,
    Queue,
    RequestState,
)
from tests.reviews.test_sla import pending_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(db: None) -> User:
    return User.objects.create_superuser("ada", "ada@example.com", password=None)


@pytest.fixture
def superuser_client(admin: User) -> Client:
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def queue(db: None) -> Queue:
    return Queue.objects.create(slug="refunds", name="Refunds", sla_minutes=30)


@pytest.fixture
def rejected(queue: Queue, reviewer: User) -> ApprovalRequest:
    """A request rejected in the inbox: one decision and one golden candidate."""
    request = pending_request(queue)
    services.approval_reject(request_id=request.pk, user=reviewer, feedback="Too much.")
    request.refresh_from_db()
    return request


def test_every_admin_page_opens(superuser_client: Client, rejected: ApprovalRequest) -> None:
    decision = Decision.objects.get(request=rejected)
    candidate = GoldenCandidate.objects.get(request=rejected)
    pages = [
        reverse("admin:reviews_queue_changelist"),
        reverse("admin:reviews_queue_change", args=[rejected.queue_id]),
        reverse("admin:reviews_queue_permissions", args=[rejected.queue_id]),
        reverse("admin:reviews_approvalrequest_changelist"),
        reverse("admin:reviews_approvalrequest_change", args=[rejected.pk]),
        reverse("admin:reviews_decision_changelist"),
        reverse("admin:reviews_decision_change", args=[decision.pk]),
        reverse("admin:reviews_goldencandidate_changelist"),
        reverse("admin:reviews_goldencandidate_change", args=[candidate.pk]),
    ]

    assert [superuser_client.get(page).status_code for page in pages] == [200] * len(pages)
    # Read only: the change page of a request shows no save button.
    page = superuser_client.get(reverse("admin:reviews_approvalrequest_change", args=[rejected.pk]))
    assert b'name="_save"' not in page.content
    assert b"Too much." in page.content


def test_requests_and_decisions_cannot_be_added_changed_or_deleted(
    superuser_client: Client, rejected: ApprovalRequest
) -> None:
    decision = Decision.objects.get(request=rejected)
    before = (
        list(ApprovalRequest.objects.values()),
        list(Decision.objects.values()),
    )

    for model, pk in (("approvalrequest", rejected.pk), ("decision", decision.pk)):
        assert superuser_client.get(reverse(f"admin:reviews_{model}_add")).status_code == 403
        assert superuser_client.post(reverse(f"admin:reviews_{model}_add"), {}).status_code == 403
        change = reverse(f"admin:reviews_{model}_change", args=[pk])
        assert (
            superuser_client.post(change, {"state": "approved", "kind": "approve"}).status_code
            == 403
        )
        delete = reverse(f"admin:reviews_{model}_delete", args=[pk])
        assert superuser_client.post(delete, {"post": "yes"}).status_code == 403
        bulk = superuser_client.post(
            reverse(f"admin:reviews_{model}_changelist"),
            {"action": "delete_selected", "_selected_action": [pk], "post": "yes"},
        )
        assert bulk.status_code == 200  # the action is not offered; nothing happens

    assert before == (
        list(ApprovalRequest.objects.values()),
        list(Decision.objects.values()),
    )
    assert rejected.state == RequestState.REJECTED


def test_a_queue_change_is_audited(superuser_client: Client, queue: Queue) -> None:
    senior = Queue.objects.create(slug="senior", name="Senior")

    response = superuser_client.post(
        reverse("admin:reviews_queue_change", args=[queue.pk]),
        {
            "slug": "refunds",
            "name": "Refunds",
            "description": "",
            "sla_minutes": "45",
            "remind_minutes": "5",
            "escalate_to": str(senior.pk),
            "expiry_outcome": "approve",
            "tier": "0",
        },
    )

    assert response.status_code == 302
    queue.refresh_from_db()
    assert (queue.sla_minutes, queue.remind_minutes, queue.escalate_to) == (45, 5, senior)
    event = AuditEvent.objects.get(verb="queue.changed")
    assert (event.actor_label, event.object_id) == ("ada", str(queue.pk))
    assert event.before["sla_minutes"] == 30
    assert event.after["sla_minutes"] == 45
    assert event.after["escalate_to"] == senior.pk


def test_an_escalation_loop_is_refused(superuser_client: Client, queue: Queue) -> None:
    senior = Queue.objects.create(slug="senior", name="Senior", escalate_to=queue)

    response = superuser_client.post(
        reverse("admin:reviews_queue_change", args=[queue.pk]),
        {
            "slug": "refunds",
            "name": "Refunds",
            "sla_minutes": "30",
            "remind_minutes": "10",
            "escalate_to": str(senior.pk),
            "expiry_outcome": "reject",
            "tier": "0",
        },
    )

    assert response.status_code == 200
    assert b"escalation loop" in response.content
    queue.refresh_from_db()
    assert queue.escalate_to is None
    assert AuditEvent.objects.filter(object_type="queue").count() == 0


def test_authority_never_goes_down_an_escalation_to_a_lower_tier_is_refused(
    superuser_client: Client, queue: Queue
) -> None:
    junior = Queue.objects.create(slug="junior", name="Junior", tier=0)

    response = superuser_client.post(
        reverse("admin:reviews_queue_change", args=[queue.pk]),
        {
            "slug": "refunds",
            "name": "Refunds",
            "sla_minutes": "30",
            "remind_minutes": "10",
            "escalate_to": str(junior.pk),
            "expiry_outcome": "reject",
            "tier": "2",
        },
    )

    assert response.status_code == 200
    assert b"below this queue&#x27;s tier 2" in response.content
    queue.refresh_from_db()
    assert (queue.escalate_to, queue.tier) == (None, 0)
    assert AuditEvent.objects.filter(object_type="queue").count() == 0


def test_object_permissions_are_managed_in_the_admin_and_audited(
    superuser_client: Client, queue: Queue
) -> None:
    rita = User.objects.create_user("rita")
    leads = Group.objects.create(name="leads")
    user_page = reverse("admin:reviews_queue_permissions_manage_user", args=[queue.pk, rita.pk])
    group_page = reverse("admin:reviews_queue_permissions_manage_group", args=[queue.pk, leads.pk])

    page = superuser_client.get(user_page)
    assert page.status_code == 200
    choices = [c[0] for c in page.context["form"].fields["permissions"].choices]
    assert sorted(choices) == ["decide_queue", "view_queue"]

    assert superuser_client.post(user_page, {"permissions": ["decide_queue"]}).status_code == 302
    assert sorted(get_user_perms(rita, queue)) == ["decide_queue", "view_queue"]
    assert superuser_client.post(group_page, {"permissions": ["view_queue"]}).status_code == 302
    assert list(get_group_perms(leads, queue)) == ["view_queue"]
    assert superuser_client.post(user_page, {"permissions": ["view_queue"]}).status_code == 302
    assert list(get_user_perms(rita, queue)) == ["view_queue"]

    events = list(
        AuditEvent.objects.filter(object_type="queue", object_id=str(queue.pk))
        .order_by("id")
        .values_list("verb", "after")
    )
    assert events == [
        ("queue.permission_granted", {"user": "rita", "permission": "view_queue", "holds": True}),
        (
            "queue.permission_granted",
            {"user": "rita", "permission": "decide_queue", "holds": True},
        ),
        (
            "queue.permission_granted",
            {"group": "leads", "permission": "view_queue", "holds": True},
        ),
        (
            "queue.permission_revoked",
            {"user": "rita", "permission": "decide_queue", "holds": False},
        ),
    ]


def test_staff_who_may_change_queues_cannot_grant_deciders(queue: Queue) -> None:
    """Managing object permissions needs guardian's own permissions, not change_queue."""
    from django.contrib.auth.models import Permission

    staff = User.objects.create_user("stan", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_queue", "change_queue"])
    )
    rita = User.objects.create_user("rita")
    client = Client()
    client.force_login(staff)

    page = reverse("admin:reviews_queue_permissions_manage_user", args=[queue.pk, rita.pk])
    response = client.post(page, {"permissions": ["decide_queue"]})

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")
    assert list(get_user_perms(rita, queue)) == []


def test_a_candidate_status_changes_from_the_list_and_is_audited(
    superuser_client: Client, rejected: ApprovalRequest
) -> None:
    candidate = GoldenCandidate.objects.get(request=rejected)
    original = (candidate.correction, candidate.proposal, candidate.input)

    response = superuser_client.post(
        reverse("admin:reviews_goldencandidate_changelist"),
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-0-id": str(candidate.pk),
            "form-0-status": CandidateStatus.ACCEPTED,
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    candidate.refresh_from_db()
    assert candidate.status == CandidateStatus.ACCEPTED
    assert (candidate.correction, candidate.proposal, candidate.input) == original
    event = AuditEvent.objects.get(verb="candidate.status_changed")
    assert (event.before, event.after) == ({"status": "candidate"}, {"status": "accepted"})
    assert superuser_client.get(reverse("admin:reviews_goldencandidate_add")).status_code == 403
    delete = reverse("admin:reviews_goldencandidate_delete", args=[candidate.pk])
    assert superuser_client.post(delete, {"post": "yes"}).status_code == 403
    assert GoldenCandidate.objects.count() == 1
    assert Decision.objects.get(request=rejected).kind == DecisionKind.REJECT


def test_a_candidate_change_form_edits_the_status_only(
    superuser_client: Client, rejected: ApprovalRequest
) -> None:
    candidate = GoldenCandidate.objects.get(request=rejected)

    response = superuser_client.post(
        reverse("admin:reviews_goldencandidate_change", args=[candidate.pk]),
        {"status": "discarded", "reason": "forged", "agent_name": "other"},
    )

    assert response.status_code == 302
    candidate.refresh_from_db()
    assert (candidate.status, candidate.reason, candidate.agent_name) == (
        "discarded",
        "Too much.",
        "support",
    )


def test_a_reviewer_without_staff_status_is_sent_to_the_login(reviewer: User, queue: Any) -> None:
    client = Client()
    client.force_login(reviewer)

    response = client.get(reverse("admin:reviews_queue_changelist"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_authority_never_goes_down_only_an_access_admin_sets_a_queues_tier(queue: Queue) -> None:
    """An operator who may change queue settings cannot raise a queue to a senior's tier."""
    from django.contrib.auth.models import Permission

    staff = User.objects.create_user("stan", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_queue", "change_queue"])
    )
    client = Client()
    client.force_login(staff)
    page = reverse("admin:reviews_queue_change", args=[queue.pk])

    shown = client.get(page).content.decode()
    response = client.post(
        page,
        {
            "slug": queue.slug,
            "name": queue.name,
            "sla_minutes": "30",
            "remind_minutes": "10",
            "expiry_outcome": "reject",
            "tier": "2",
        },
    )

    assert 'name="tier"' not in shown
    assert response.status_code == 302
    queue.refresh_from_db()
    assert queue.tier == 0
