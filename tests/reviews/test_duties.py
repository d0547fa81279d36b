"""Separation of duties (invariant 14) and queues that reach a person (invariant 10).

Personas: Sam submitted the run and may decide in its queue; Rita and Bea review it
too; Ada is an access admin; Otto an operator. Nobody decides a request of a run they
submitted (unless its queue lets submitters decide, and never one that needs two
approvers), nobody approves twice, nobody grants themselves the right to decide, and
who may change permissions is an admin's right. Every refusal is audited and changes
nothing else.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import assign_perm, get_user_perms

from agentdesk.tokens import api_token_create
from audit.models import AuditEvent
from examples.support.seed import seed_shop
from reviews import access, services
from reviews.models import (
    ApprovalRequest,
    Decision,
    GoldenCandidate,
    Queue,
    RequestState,
)
from runs import services as run_services
from runs.models import DeadLetter, Run, RunState
from tests.processes import Simulator
from tests.reviews.factories import queue_make, request_make, user_make
from tests.runs.factories import drive, seeded_ticket_input

pytestmark = pytest.mark.django_db

OWN_RUN = (
    "You submitted this run: in Refunds someone else decides its requests. Escalate it, "
    "or ask another reviewer."
)
OWN_TWO_PERSON = (
    "You submitted this run: a request that needs several approvers is decided by people "
    "other than the run's submitter. Escalate it, or ask another reviewer."
)
TWICE = "You have already approved these arguments; a second person must approve them."


@pytest.fixture
def sam(db: None) -> User:
    return user_make("sam")


@pytest.fixture
def rita(db: None) -> User:
    return user_make("rita")


@pytest.fixture
def bea(db: None) -> User:
    return user_make("bea")


@pytest.fixture
def refunds(sam: User, rita: User, bea: User) -> Queue:
    queue_make("refunds-senior", deciders=(sam, rita, bea))
    return queue_make("refunds", deciders=(sam, rita, bea))


def _submitted_by(request: ApprovalRequest, user: User) -> ApprovalRequest:
    Run.objects.filter(pk=request.run_id).update(submitted_by=user)
    return ApprovalRequest.objects.select_related("run", "queue").get(pk=request.pk)


@pytest.fixture
def own(refunds: Queue, sam: User) -> ApprovalRequest:
    """A refund request on a run Sam submitted."""
    return _submitted_by(request_make(queue=refunds), sam)


def _snapshot(request: ApprovalRequest) -> tuple[Any, ...]:
    """Everything a refused decision must leave alone, the audit log apart from its refusal."""
    request = ApprovalRequest.objects.select_related("run").get(pk=request.pk)
    return (
        request.state,
        request.queue_id,
        request.arguments,
        request.args_hash,
        request.approvals_required,
        request.run.state,
        list(Decision.objects.order_by("id").values_list("kind", "decided_by__username")),
        GoldenCandidate.objects.count(),
        list(AuditEvent.objects.exclude(verb="request.decision_refused").values_list("seq")),
    )


def _refusals() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (e.actor_label, e.object_id, e.after)
        for e in AuditEvent.objects.filter(verb="request.decision_refused").order_by("seq")
    ]


def _decide(kind: str, request: ApprovalRequest, user: User) -> services.Outcome:
    if kind == "approve":
        return services.approval_approve(
            request_id=request.pk, user=user, seen_hash=request.args_hash
        )
    if kind == "edit":
        return services.approval_edit(
            request_id=request.pk,
            user=user,
            seen_hash=request.args_hash,
            arguments={**request.arguments, "amount": "20.00"},
        )
    if kind == "reject":
        return services.approval_reject(request_id=request.pk, user=user, feedback="No.")
    outcomes = services.approval_bulk_approve(
        request_ids=[request.pk], user=user, seen_hashes={request.pk: request.args_hash}
    )
    return outcomes[0]


# --- nobody decides a run they submitted ---------------------------------------------------


@pytest.mark.parametrize("kind", ["approve", "edit", "reject", "bulk"])
def test_separation_of_duties_the_submitter_may_not_decide_their_own_run(
    refunds: Queue, sam: User, kind: str
) -> None:
    # Bulk approval takes low-risk calls only: a reply, not a refund.
    tool = "send_reply" if kind == "bulk" else "issue_refund"
    own = _submitted_by(request_make(queue=refunds, tool=tool), sam)
    before = _snapshot(own)

    with pytest.raises(services.DutyRefused) as refused:
        _decide(kind, own, sam)

    assert refused.value.message == OWN_RUN
    assert _snapshot(own) == before
    decision = "approve" if kind == "bulk" else kind
    assert _refusals() == [
        ("sam", str(own.pk), {"decision": decision, "rule": "submitter", "reason": OWN_RUN})
    ]


@pytest.mark.parametrize("kind", ["approve", "reject"])
def test_separation_of_duties_the_submitter_neither_resumes_nor_ends_their_stuck_run(
    refunds: Queue, sam: User, kind: str
) -> None:
    from tests.reviews.test_stuck_runs_and_claims import _stuck

    stuck = _submitted_by(_stuck(refunds), sam)
    before = _snapshot(stuck)

    with pytest.raises(services.DutyRefused):
        _decide(kind, stuck, sam)

    assert _snapshot(stuck) == before
    assert Run.objects.get(pk=stuck.run_id).state == RunState.NEEDS_HUMAN


def test_separation_of_duties_another_reviewer_decides_the_submitter_s_run(
    own: ApprovalRequest, rita: User
) -> None:
    outcome = _decide("approve", own, rita)

    assert outcome.completed
    assert ApprovalRequest.objects.get(pk=own.pk).state == RequestState.APPROVED
    assert _refusals() == []


def test_separation_of_duties_a_submitter_may_escalate_their_own_run_s_request(
    own: ApprovalRequest, sam: User
) -> None:
    """Escalating decides nothing: it hands the call to other people."""
    senior = Queue.objects.get(slug="refunds-senior")

    outcome = services.approval_escalate(
        request_id=own.pk, user=sam, to_queue=senior, reason="too big for me"
    )

    assert not outcome.completed
    own.refresh_from_db()
    assert (own.state, own.queue_id) == (RequestState.PENDING, senior.pk)
    assert _refusals() == []


def test_separation_of_duties_a_queue_may_let_submitters_decide_single_approver_requests(
    own: ApprovalRequest, sam: User
) -> None:
    Queue.objects.filter(pk=own.queue_id).update(submitter_may_decide=True)
    own = ApprovalRequest.objects.select_related("run", "queue").get(pk=own.pk)

    outcome = _decide("approve", own, sam)

    assert outcome.completed
    assert _refusals() == []


def test_separation_of_duties_a_two_person_request_never_counts_its_submitter(
    refunds: Queue, sam: User, rita: User, bea: User
) -> None:
    """Even in a queue that lets submitters decide, the two approvers are others."""
    Queue.objects.filter(pk=refunds.pk).update(submitter_may_decide=True)
    request = _submitted_by(request_make(queue=refunds, approvals_required=2), sam)
    before = _snapshot(request)

    with pytest.raises(services.DutyRefused) as refused:
        _decide("approve", request, sam)
    assert refused.value.message == OWN_TWO_PERSON
    assert _snapshot(request) == before

    first = _decide("approve", request, rita)
    second = _decide("approve", request, bea)

    assert (first.completed, second.completed) == (False, True)
    assert list(
        Decision.objects.filter(request=request).values_list("decided_by__username", flat=True)
    ) == ["rita", "bea"]
    assert [rule for _, _, after in _refusals() for rule in [after["rule"]]] == ["submitter"]


def test_separation_of_duties_an_approval_given_before_an_edit_made_it_two_person_is_not_counted(
    sam: User, rita: User, bea: User
) -> None:
    """The submitter, allowed to decide a single-approver request, edits it above the
    two-person line: their edit is not one of the two approvals."""
    senior = queue_make("refunds-senior", deciders=(sam, rita, bea))
    queue_make("refunds")
    Queue.objects.filter(pk=senior.pk).update(submitter_may_decide=True)
    request = _submitted_by(
        request_make(
            queue=senior,
            rule="refund_over_100",
            arguments={"order_id": "SO-1002", "amount": "150.00", "reason": "broken"},
        ),
        sam,
    )

    edited = services.approval_edit(
        request_id=request.pk,
        user=sam,
        seen_hash=request.args_hash,
        arguments={"order_id": "SO-1002", "amount": "300.00", "reason": "broken"},
    )
    request.refresh_from_db()
    first = _decide("approve", request, rita)
    second = _decide("approve", request, bea)

    assert request.approvals_required == 2
    assert (edited.completed, first.completed, second.completed) == (False, False, True)
    assert ApprovalRequest.objects.get(pk=request.pk).state == RequestState.APPROVED


# --- nobody approves twice ------------------------------------------------------------------


def test_separation_of_duties_an_editor_who_approves_again_is_not_a_second_approver(
    refunds: Queue, rita: User, bea: User
) -> None:
    request = request_make(queue=refunds, approvals_required=2)
    _decide("approve", request, rita)  # the proposed arguments
    edited = services.approval_edit(
        request_id=request.pk,
        user=rita,
        seen_hash=request.args_hash,
        arguments={**request.arguments, "amount": "20.00"},
    )
    request.refresh_from_db()
    before = _snapshot(request)

    with pytest.raises(services.DutyRefused) as refused:
        _decide("approve", request, rita)  # the edited arguments, by their editor

    assert not edited.completed
    assert refused.value.message == TWICE
    assert _snapshot(request) == before
    assert _refusals() == [
        (
            "rita",
            str(request.pk),
            {"decision": "approve", "rule": "second_approval", "reason": TWICE},
        )
    ]
    page = _as(rita).get(f"/inbox/requests/{request.pk}/").content.decode()
    assert "You approved these arguments; 2 different people must approve them" in page
    assert f'action="/inbox/requests/{request.pk}/approve"' not in page
    assert f'action="/inbox/requests/{request.pk}/reject"' in page
    assert _decide("approve", request, bea).completed


@pytest.mark.django_db(transaction=True)
def test_separation_of_duties_one_person_approving_twice_at_once_counts_once(
    refunds: Queue, rita: User
) -> None:
    """Two tabs, one reviewer, the same moment: one approval, one audited refusal."""
    from tests.reviews.test_concurrency import race

    request = request_make(queue=refunds, approvals_required=2)

    results = race([lambda: _decide("approve", request, rita)] * 2)

    assert sorted(type(r).__name__ for r in results) == ["DutyRefused", "Outcome"]
    assert Decision.objects.filter(request=request, decided_by=rita).count() == 1
    assert ApprovalRequest.objects.get(pk=request.pk).state == RequestState.PENDING
    assert [after["rule"] for _, _, after in _refusals()] == ["second_approval"]


# --- the pages and the API say why -------------------------------------------------------------


def _as(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_separation_of_duties_the_request_page_tells_the_submitter_why(
    own: ApprovalRequest, sam: User, rita: User
) -> None:
    mine = _as(sam).get(f"/inbox/requests/{own.pk}/").content.decode()
    theirs = _as(rita).get(f"/inbox/requests/{own.pk}/").content.decode()

    assert f"You cannot approve, edit or reject this request.</strong> {OWN_RUN}" in mine
    assert f'action="/inbox/requests/{own.pk}/approve"' not in mine
    assert f'action="/inbox/requests/{own.pk}/claim"' not in mine  # nor claims it on load
    assert f'action="/inbox/requests/{own.pk}/escalate"' in mine
    assert "You cannot approve" not in theirs
    assert f'action="/inbox/requests/{own.pk}/approve"' in theirs


EDIT_POST = {"args-order_id": "SO-1002", "args-amount": "20.00", "args-reason": "lid only"}


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("approve", {"args_hash": "HASH"}),
        ("edit", {"edit-args_hash": "HASH", **EDIT_POST}),
        ("reject", {"feedback": "No."}),
    ],
)
def test_separation_of_duties_the_submitter_s_decision_post_is_403(
    own: ApprovalRequest, sam: User, path: str, data: dict[str, str]
) -> None:
    data = {key: own.args_hash if value == "HASH" else value for key, value in data.items()}
    before = _snapshot(own)

    response = _as(sam).post(f"/inbox/requests/{own.pk}/{path}", data)

    assert response.status_code == 403
    assert OWN_RUN in response.content.decode()
    assert _snapshot(own) == before
    assert [after["rule"] for _, _, after in _refusals()] == ["submitter"]


def test_separation_of_duties_the_submitter_cannot_claim_their_own_run_s_request(
    own: ApprovalRequest, sam: User
) -> None:
    """A claim tells the people who may decide that the request is taken."""
    before = _snapshot(own)

    response = _as(sam).post(f"/inbox/requests/{own.pk}/claim")

    assert response.status_code == 403
    own.refresh_from_db()
    assert (own.claimed_by_id, own.claimed_until) == (None, None)
    assert _snapshot(own) == before


def test_separation_of_duties_the_submitter_s_bulk_approval_is_refused(
    refunds: Queue, sam: User
) -> None:
    own = _submitted_by(request_make(queue=refunds, tool="send_reply"), sam)
    before = _snapshot(own)

    response = _as(sam).post(
        "/inbox/bulk-approve", {"ids": [own.pk], f"hash_{own.pk}": own.args_hash}, follow=True
    )

    assert OWN_RUN in response.content.decode()
    assert _snapshot(own) == before
    assert [after["rule"] for _, _, after in _refusals()] == ["submitter"]


def test_separation_of_duties_the_api_refuses_the_submitter_with_403(
    own: ApprovalRequest, sam: User
) -> None:
    _, key = api_token_create(user=sam, name="test")
    before = _snapshot(own)

    response = Client().post(
        f"/api/requests/{own.pk}/decision",
        json.dumps({"decision": "approve", "args_hash": own.args_hash}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )

    assert response.status_code == 403
    assert response.json()["error"] == {"message": OWN_RUN}
    assert _snapshot(own) == before


# --- nobody grants themselves; granting is an admin's right ----------------------------------


@pytest.fixture
def ada(db: None) -> User:
    return user_make("ada", "access_admin")


def _access() -> tuple[Any, ...]:
    return (
        sorted(UserObjectPermission.objects.values_list("user__username", "permission__codename")),
        sorted(GroupObjectPermission.objects.values_list("group__name", "permission__codename")),
    )


def _members_post(user: User, queue: Queue, principal: str, action: str = "grant") -> Any:
    return _as(user).post(
        f"/inbox/queues/{queue.pk}/members",
        {"principal": principal, "level": "decide", "action": action},
    )


def test_separation_of_duties_an_admin_grants_another_person_and_it_is_audited(
    refunds: Queue, ada: User
) -> None:
    nina = user_make("nina")

    response = _members_post(ada, refunds, "nina")

    assert response.status_code == 302
    assert set(get_user_perms(nina, refunds)) == {"view_queue", "decide_queue"}
    granted = AuditEvent.objects.filter(verb="queue.permission_granted").order_by("seq")
    assert [(e.actor_label, e.after) for e in granted] == [
        ("ada", {"user": "nina", "permission": "view_queue", "holds": True}),
        ("ada", {"user": "nina", "permission": "decide_queue", "holds": True}),
    ]


@pytest.mark.parametrize("who", ["access_admin", "superuser"])
def test_separation_of_duties_nobody_grants_themselves_the_right_to_decide(
    refunds: Queue, who: str
) -> None:
    me = (
        User.objects.create_superuser("root", "root@example.com", password=None)
        if who == "superuser"
        else user_make("ada", "access_admin")
    )
    before = _access()

    response = _members_post(me, refunds, me.username)

    assert response.status_code == 400
    message = "Nobody grants themselves access to a queue: another admin must do it."
    assert message in response.content.decode()
    assert _access() == before
    refusal = AuditEvent.objects.get(verb="queue.permission_refused")
    assert (refusal.actor_label, refusal.after) == (
        me.username,
        {"asked_for": f"user {me.username}", "permission": "grant decide_queue", "reason": message},
    )
    assert AuditEvent.objects.filter(verb="queue.permission_granted").count() == 0


def test_separation_of_duties_nobody_grants_a_group_they_belong_to(
    refunds: Queue, ada: User
) -> None:
    leads = Group.objects.create(name="leads")
    ada.groups.add(leads)
    before = _access()

    response = _members_post(ada, refunds, "group:leads")

    assert response.status_code == 400
    assert "You belong to the group leads" in response.content.decode()
    assert _access() == before
    assert AuditEvent.objects.get(verb="queue.permission_refused").after["asked_for"] == (
        "group leads"
    )


def test_separation_of_duties_an_admin_may_give_up_their_own_access(
    refunds: Queue, ada: User
) -> None:
    assign_perm("reviews.view_queue", ada, refunds)
    assign_perm("reviews.decide_queue", ada, refunds)

    response = _members_post(ada, refunds, "ada", action="revoke")

    assert response.status_code == 302
    assert list(get_user_perms(ada, refunds)) == ["view_queue"]


def test_separation_of_duties_an_operator_cannot_grant_even_through_the_service(
    refunds: Queue,
) -> None:
    otto = user_make("otto", "operator")
    before = _access()

    with pytest.raises(access.AccessRefused) as refused:
        access.queue_permission_set(
            actor=otto, queue=refunds, principal=otto, level="decide", granted=True
        )

    assert (refused.value.forbidden, refused.value.message) == (True, access.NOT_AN_ADMIN)
    assert _access() == before
    assert AuditEvent.objects.get(verb="queue.permission_refused").after == {
        "asked_for": "user otto",
        "permission": "grant decide_queue",
        "reason": access.NOT_AN_ADMIN,
    }


def test_separation_of_duties_the_admin_site_refuses_a_self_grant(refunds: Queue) -> None:
    root = User.objects.create_superuser("root", "root@example.com", password=None)
    page = reverse("admin:reviews_queue_permissions_manage_user", args=[refunds.pk, root.pk])

    response = _as(root).post(page, {"permissions": ["decide_queue"]})

    assert response.status_code == 200  # the form again, with the refusal
    assert "Nobody grants themselves access to a queue" in response.content.decode()
    assert list(get_user_perms(root, refunds)) == []
    assert AuditEvent.objects.filter(verb="queue.permission_refused").count() == 1


def test_separation_of_duties_the_admin_site_needs_manage_queue_access(refunds: Queue) -> None:
    """Staff with guardian's own permissions but not manage_queue_access are turned away."""
    from django.contrib.auth.models import Permission

    staff = User.objects.create_user("stan", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(
            codename__in=[
                "view_queue",
                "change_queue",
                "change_userobjectpermission",
                "view_userobjectpermission",
            ]
        )
    )
    rita = User.objects.get(username="rita")
    before = _access()
    page = reverse("admin:reviews_queue_permissions_manage_user", args=[refunds.pk, rita.pk])

    response = _as(staff).post(page, {"permissions": []})

    assert (response.status_code, response["Location"]) == (302, reverse("admin:index"))
    assert _access() == before


def test_separation_of_duties_only_access_admins_let_submitters_decide(refunds: Queue) -> None:
    from django.contrib.auth.models import Permission

    staff = User.objects.create_user("stan", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_queue", "change_queue"])
    )
    root = User.objects.create_superuser("root", "root@example.com", password=None)
    page = reverse("admin:reviews_queue_change", args=[refunds.pk])
    form = {"slug": "refunds", "name": "Refunds", "sla_minutes": "30", "remind_minutes": "10"}

    shown_to_staff = _as(staff).get(page).content.decode()
    response = _as(staff).post(
        page, {**form, "expiry_outcome": "reject", "submitter_may_decide": "on"}
    )

    assert 'name="submitter_may_decide"' not in shown_to_staff
    assert 'name="submitter_may_decide"' in _as(root).get(page).content.decode()
    assert response.status_code == 302  # the settings it may change were saved
    assert Queue.objects.get(pk=refunds.pk).submitter_may_decide is False


def test_separation_of_duties_nobody_changes_their_own_access_in_the_user_admin() -> None:
    root = User.objects.create_superuser("root", "root@example.com", password=None)
    other = user_make("nina")
    admins = Group.objects.create(name="admins")
    root.groups.add(admins)
    client = _as(root)

    mine = client.get(reverse("admin:auth_user_change", args=[root.pk])).content.decode()
    theirs = client.get(reverse("admin:auth_user_change", args=[other.pk])).content.decode()
    own_group = client.get(reverse("admin:auth_group_change", args=[admins.pk])).content.decode()
    reviewers = Group.objects.get(name="reviewer")
    other_group = client.get(reverse("admin:auth_group_change", args=[reviewers.pk]))

    assert ('name="groups"' in mine, 'name="is_superuser"' in mine) == (False, False)
    assert ('name="groups"' in theirs, 'name="is_superuser"' in theirs) == (True, True)
    assert 'name="permissions"' not in own_group
    assert 'name="permissions"' in other_group.content.decode()


# --- the runtime never creates a queue -------------------------------------------------------


@pytest.fixture
def shop(db: None) -> None:
    seed_shop()  # with the demo's queues: refunds, refunds-senior, support


def test_a_call_whose_queue_was_deleted_goes_to_the_escalation_queue(
    shop: None, model_endpoint: Simulator
) -> None:
    """Invariant 10: the refund's queue is gone; the request still reaches a person."""
    Queue.objects.filter(slug="refunds").delete()
    run, _ = run_services.run_submit(agent_name="support", run_input=seeded_ticket_input("T-0002"))

    run = drive(run)

    assert run.state == RunState.WAITING_FOR_APPROVAL
    request = ApprovalRequest.objects.select_related("queue").get(run=run)
    assert (request.queue.slug, request.tool) == ("support", "issue_refund")
    assert not Queue.objects.filter(slug="refunds").exists()
    detour = AuditEvent.objects.get(verb="run.queue_missing")
    assert (detour.object_id, detour.after) == (
        str(run.pk),
        {"named": "refunds", "used": "support", "because": "the agent's escalation queue"},
    )


def test_a_stuck_run_whose_escalation_queue_was_deleted_waits_in_the_default_queue(
    shop: None, operator: User, settings: Any
) -> None:
    from django.db import transaction

    from releases import configuration
    from releases import services as releases

    settings.AGENTDESK_LLM_ENDPOINTS = {"default": {"base_url": "http://127.0.0.1:9/v1"}}
    Queue.objects.create(slug="support-leads", name="Support leads")
    config = dict(releases.config_active(agent_name="support").config)
    version = configuration.config_version_create(
        agent_name="support",
        config={**config, "escalation_queue": "support-leads"},
        note="leads",
        user=operator,
    )
    run = Run.objects.create(
        agent_name="support",
        config_version=version,
        input={},
        state=RunState.NEEDS_HUMAN,
        trace_id="trace-stuck",
        prompt_version="p",
        model="m",
        request_hash="h",
    )
    Queue.objects.filter(slug="support-leads").delete()

    with transaction.atomic():
        request = services.run_escalation_open(
            run=run, error={"class": "budget_exceeded", "message": "the run reached a limit"}
        )

    assert request.queue.slug == "support"
    detour = AuditEvent.objects.get(verb="run.queue_missing")
    assert detour.after == {
        "named": "support-leads",
        "used": "support",
        "because": "the policy's default queue",
    }
    assert not Queue.objects.filter(slug="support-leads").exists()


def test_a_call_with_no_queue_left_is_dead_lettered_never_stranded(
    shop: None, model_endpoint: Simulator
) -> None:
    Queue.objects.all().delete()
    run, _ = run_services.run_submit(agent_name="support", run_input=seeded_ticket_input("T-0002"))

    run = drive(run)

    assert run.state == RunState.DEAD_LETTERED
    assert run.error is not None
    assert run.error["message"].endswith(
        "raised NoQueue: no queue can take this run's request: none of 'refunds' (named by "
        "the policy), 'support' (the agent's escalation queue) exists"
    )
    assert DeadLetter.objects.filter(run=run).count() == 1
    assert Queue.objects.count() == 0
    assert ApprovalRequest.objects.count() == 0


def test_the_demo_seed_creates_the_support_agent_s_queues_once(db: None) -> None:
    seed_shop()
    seed_shop()

    assert sorted(Queue.objects.values_list("slug", "escalate_to__slug")) == [
        ("refunds", "refunds-senior"),
        ("refunds-senior", None),
        ("support", None),
    ]
    assert AuditEvent.objects.filter(verb="queue.created").count() == 3
