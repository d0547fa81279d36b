"""Reads for the reviewers' pages: which queues a person sees, the inbox, one request.

Access is decided once per page, as a set of queue ids, and then applied in SQL: the inbox
never checks permissions object by object, so it costs the same few queries whether a
page holds five requests or fifty, and whether the person sees two queues or all of them.

A global (model) permission on Queue counts as that permission on every queue: auditors
hold ``reviews.view_queue`` globally and see everything; superusers see and decide
everywhere.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from django.contrib.auth.models import AnonymousUser, Group
from django.contrib.auth.models import User as AuthUser
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from guardian.shortcuts import get_groups_with_perms, get_objects_for_user, get_users_with_perms

from reviews.models import ApprovalRequest, GoldenCandidate, Queue, RequestState

User = AuthUser | AnonymousUser

VIEW = "reviews.view_queue"
DECIDE = "reviews.decide_queue"

# The columns the inbox list shows; ``context`` (the run's input, history and records) can
# be large and is only read by the detail pane.
_LIST_FIELDS = (
    "id",
    "kind",
    "queue__id",
    "queue__name",
    "queue__slug",
    "run_id",
    "state",
    "agent_name",
    "tool",
    "risk",
    "arguments",
    "args_hash",
    "rule",
    "confidence",
    "threshold",
    "approvals_required",
    "flags",
    "due_at",
    "created_at",
    "claimed_until",
    "claimed_by__id",
    "claimed_by__username",
)

AGE_CHOICES = (5, 15, 30, 60, 240)


def _queue_ids(user: User, perm: str) -> list[int]:
    if not user.is_authenticated or not user.is_active:
        return []
    queues = get_objects_for_user(user, perm, klass=Queue, accept_global_perms=True)
    return list(queues.order_by().values_list("id", flat=True))


def queue_ids_visible(*, user: User) -> list[int]:
    """Ids of the queues whose requests the user may see."""
    return _queue_ids(user, VIEW)


def queue_ids_decidable(*, user: User, visible: Collection[int] | None = None) -> list[int]:
    """Ids of the queues in which the user may decide (a subset of what they must also see).

    ``visible``: the ids queue_ids_visible gave for this user, when the caller has them.
    """
    seen = set(queue_ids_visible(user=user) if visible is None else visible)
    return [pk for pk in _queue_ids(user, DECIDE) if pk in seen]


def queues_visible(*, user: User) -> list[Queue]:
    ids = queue_ids_visible(user=user)
    return list(Queue.objects.filter(pk__in=ids).order_by("name"))


def can_view(*, user: User, queue: Queue) -> bool:
    return bool(user.is_authenticated and (user.has_perm(VIEW) or user.has_perm(VIEW, queue)))


def can_decide(*, user: User, request: ApprovalRequest) -> bool:
    """Whether the user may decide the request: they see its queue and may decide in it."""
    queue = request.queue
    if not can_view(user=user, queue=queue):
        return False
    return bool(user.has_perm(DECIDE) or user.has_perm(DECIDE, queue))


def can_manage_queues(*, user: User) -> bool:
    """Whether the user sees every queue and who reviews it (operators, admins).

    Seeing is all ``change_queue`` gives here: changing who reviews is
    ``manage_queue_access`` (reviews.access).
    """
    return bool(
        user.is_authenticated
        and (user.has_perm("reviews.change_queue") or user.has_perm("reviews.manage_queue_access"))
    )


# --- the inbox -----------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxFilters:
    queue: int | None = None
    agent: str = ""
    tool: str = ""
    risk: str = ""
    older_than: int | None = None  # minutes since the request arrived

    @property
    def is_empty(self) -> bool:
        return self == InboxFilters()

    def as_query(self) -> dict[str, str]:
        query = {
            "queue": str(self.queue) if self.queue else "",
            "agent": self.agent,
            "tool": self.tool,
            "risk": self.risk,
            "age": str(self.older_than) if self.older_than else "",
        }
        return {key: value for key, value in query.items() if value}


def inbox_requests(
    *, queue_ids: list[int], filters: InboxFilters, now: Any = None
) -> QuerySet[ApprovalRequest]:
    """Pending requests of the given (visible) queues, soonest due first.

    One query for a page of rows, whatever the page size: the queue and the claimer come
    in by join, ``context`` stays in the database.
    """
    requests = ApprovalRequest.objects.filter(state=RequestState.PENDING, queue_id__in=queue_ids)
    if filters.queue:
        requests = requests.filter(queue_id=filters.queue)
    if filters.agent:
        requests = requests.filter(agent_name=filters.agent)
    if filters.tool:
        requests = requests.filter(tool=filters.tool)
    if filters.risk:
        requests = requests.filter(risk=filters.risk)
    if filters.older_than:
        cutoff = (now or timezone.now()) - timedelta(minutes=filters.older_than)
        requests = requests.filter(created_at__lte=cutoff)
    return (
        requests.select_related("queue", "claimed_by").only(*_LIST_FIELDS).order_by("due_at", "id")
    )


def request_get_visible(*, user: User, request_id: int) -> ApprovalRequest | None:
    """The request with what its detail pane shows, or None if the user may not see it."""
    request = (
        ApprovalRequest.objects.select_related("queue", "claimed_by", "run", "action")
        .filter(pk=request_id)
        .first()
    )
    if request is None or not can_view(user=user, queue=request.queue):
        return None
    return request


def requests_for_bulk(*, request_ids: list[int]) -> list[ApprovalRequest]:
    """The selected requests with their queues, for the bulk view's permission check."""
    return list(
        ApprovalRequest.objects.filter(pk__in=request_ids).only("id", "queue_id").order_by("id")
    )


def request_decisions(*, request: ApprovalRequest) -> QuerySet[Any]:
    return request.decisions.select_related("decided_by", "from_queue", "to_queue").order_by("id")


@dataclass(frozen=True)
class EscalationTarget:
    queue: Queue
    label: str  # a queue the reviewer may not open is not named


def escalation_targets(
    *, request: ApprovalRequest, user: User, visible: Collection[int] | None = None
) -> list[EscalationTarget]:
    """Where a reviewer may send a request: the queue's configured target first, then the
    other queues they may open.

    The configured target is offered even when the reviewer may not open it (escalating
    means handing the call to people with more authority), but not by name: which queues
    exist beyond one's own is not a reviewer's to read. Other hidden queues are not offered.
    ``visible``: the ids queue_ids_visible gave for this user, when the caller has them.
    """
    visible = set(queue_ids_visible(user=user) if visible is None else visible)
    target = request.queue.escalate_to_id
    queues = (
        Queue.objects.exclude(pk=request.queue_id)
        .filter(Q(pk__in=visible) | Q(pk=target) if target else Q(pk__in=visible))
        .filter(tier__gte=request.required_tier)  # never to less authority than it needs
    )
    return [
        EscalationTarget(
            queue=queue,
            label=queue.name if queue.pk in visible else "the next level (configured)",
        )
        for queue in sorted(queues.order_by("name"), key=lambda queue: queue.pk != target)
    ]


# --- queues and candidates -----------------------------------------------------------------


@dataclass(frozen=True)
class QueueRow:
    queue: Queue
    pending: int
    overdue: int
    can_manage: bool
    can_view: bool


def queue_rows(*, user: User) -> list[QueueRow]:
    """Queues the user sees (all of them for queue managers) with pending and overdue counts."""
    manage = can_manage_queues(user=user)
    visible = set(queue_ids_visible(user=user))
    queues = Queue.objects.all() if manage else Queue.objects.filter(pk__in=visible)
    now = timezone.now()
    pending = Q(requests__state=RequestState.PENDING)
    counted = (
        queues.annotate(
            pending=Count("requests", filter=pending),
            overdue=Count("requests", filter=pending & Q(requests__due_at__lt=now)),
        )
        .select_related("escalate_to")
        .order_by("name")
    )
    return [
        QueueRow(
            queue=queue,
            pending=queue.pending,
            overdue=queue.overdue,
            can_manage=manage,
            can_view=queue.pk in visible,
        )
        for queue in counted
    ]


def queue_get_manageable(*, user: User, queue_id: int) -> Queue | None:
    """The queue if the user may see it or manage queues; None otherwise (→ 404)."""
    queue = Queue.objects.filter(pk=queue_id).first()
    if queue is None:
        return None
    if can_manage_queues(user=user) or can_view(user=user, queue=queue):
        return queue
    return None


@dataclass(frozen=True)
class Member:
    name: str
    kind: str  # "user" or "group"
    pk: int
    view: bool
    decide: bool


def queue_members(*, queue: Queue) -> list[Member]:
    """Who holds view or decide on the queue itself (object permissions, not global ones)."""
    members: list[Member] = []
    users = cast(
        dict[Any, list[str]],
        get_users_with_perms(
            queue, attach_perms=True, with_superusers=False, with_group_users=False
        ),
    )
    for user, perms in sorted(users.items(), key=lambda item: item[0].get_username()):
        members.append(
            Member(
                name=user.get_username(),
                kind="user",
                pk=user.pk,
                view="view_queue" in perms,
                decide="decide_queue" in perms,
            )
        )
    groups = cast(dict[Group, list[str]], get_groups_with_perms(queue, attach_perms=True))
    for group, perms in sorted(groups.items(), key=lambda item: item[0].name):
        members.append(
            Member(
                name=group.name,
                kind="group",
                pk=group.pk,
                view="view_queue" in perms,
                decide="decide_queue" in perms,
            )
        )
    return members


def groups_all() -> QuerySet[Group]:
    return Group.objects.order_by("name")


def candidates_list(*, user: User) -> QuerySet[GoldenCandidate]:
    """Candidates the user may read: those of queues they may open, or every one by role.

    A candidate holds a request's arguments and its reviewer's correction or feedback:
    what the queue shows. Operators and auditors read every run in full
    (``runs.view_all_runs``), so every candidate too.
    """
    candidates = GoldenCandidate.objects.select_related("decision__decided_by", "request__queue")
    if not user.has_perm("runs.view_all_runs"):
        candidates = candidates.filter(request__queue_id__in=queue_ids_visible(user=user))
    return candidates.order_by("-created_at", "-id")


def queue_slugs_existing(slugs: Collection[str]) -> set[str]:
    """Which of ``slugs`` are queues (the configuration service's queue lookup)."""
    return set(Queue.objects.filter(slug__in=list(slugs)).values_list("slug", flat=True))
