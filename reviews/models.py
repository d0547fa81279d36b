"""The humans' side: queues, approval requests, decisions and golden-example candidates.

Who may see a queue and who may decide in it are django-guardian object permissions on
the queue (``view_queue``, ``decide_queue``); a request is visible exactly when its queue
is. Granting and revoking them needs the model permission ``manage_queue_access``
(admins), never a queue's own. The approval a request records covers one argument hash
and is used once: see reviews.services for the transitions.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from runs.models import Action, Run


class ExpiryOutcome(models.TextChoices):
    """What an overdue request in a queue without an escalation target turns into."""

    REJECT = "reject", "Reject (the agent is told no one approved in time)"
    APPROVE = "approve", "Approve as proposed"


class Queue(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    # A request's due time is its creation (or arrival by escalation) plus this.
    sla_minutes = models.PositiveIntegerField(default=60)
    # Reviewers are reminded this long before a request's due time.
    remind_minutes = models.PositiveIntegerField(default=10)
    # Overdue requests move here; without one, they take ``expiry_outcome``.
    escalate_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expiry_outcome = models.CharField(
        max_length=10, choices=ExpiryOutcome.choices, default=ExpiryOutcome.REJECT
    )
    # The authority its reviewers hold (0: first line; refunds 1, senior refunds 2 in the
    # demo). A request keeps the highest tier it ever needed and never moves to a queue
    # below it, by escalation, by an edit or by the SLA clock.
    tier = models.PositiveSmallIntegerField(
        default=0, help_text="Authority of its reviewers; requests never move to a lower tier."
    )
    # Separation of duties: off (the default), whoever submitted a run may not decide its
    # requests here. A two-person request never counts its run's submitter, whatever this
    # says (reviews.services.refusals.decider_barrier).
    submitter_may_decide = models.BooleanField(
        default=False,
        help_text="Let the person who submitted a run decide its requests in this queue "
        "(never for requests that need two approvers).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("decide_queue", "Can decide requests in the queue"),
            # Who may see and decide is an admin's right, apart from a queue's settings
            # (change_queue, which operators hold): see reviews.access.
            ("manage_queue_access", "Can grant and revoke who may see and decide in queues"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(escalate_to=models.F("id")), name="queue_not_escalating_to_itself"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class RequestState(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    # Overdue in a queue whose expiry outcome decided it (approved or rejected as above);
    # ``outcome`` says which.
    EXPIRED = "expired"


class RequestOutcome(models.TextChoices):
    """How a request ended (``ApprovalRequest.outcome``; blank while it is pending)."""

    APPROVED = "approved"
    EDITED = "edited", "Approved with edits"
    REJECTED = "rejected"
    # Overdue in a queue without an escalation target: its ``expiry_outcome`` decided.
    EXPIRED_REJECTED = "expired_rejected", "Expired, rejected"
    EXPIRED_APPROVED = "expired_approved", "Expired, approved"


class RequestKind(models.TextChoices):
    # A proposed tool call the policy sent to review: approve, edit, reject, escalate.
    ACTION = "action", "Tool call"
    # A run that cannot go on by itself (every model failed, or a limit was reached with
    # on_exceeded=escalate): approve resumes it, reject ends it as failed.
    RUN = "run", "Run needs a person"


class ApprovalRequest(models.Model):
    """One proposed tool call (or one stuck run) waiting for people, with what they need."""

    kind = models.CharField(max_length=8, choices=RequestKind.choices, default=RequestKind.ACTION)
    queue = models.ForeignKey(Queue, on_delete=models.PROTECT, related_name="requests")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="approval_requests")
    action = models.OneToOneField(
        Action, null=True, blank=True, on_delete=models.CASCADE, related_name="approval"
    )
    state = models.CharField(
        max_length=10, choices=RequestState.choices, default=RequestState.PENDING
    )
    # Denormalised from the run and action so the inbox filters without joins.
    agent_name = models.CharField(max_length=64)
    tool = models.CharField(max_length=100)
    risk = models.CharField(max_length=16)
    # The arguments a reviewer sees and approves, and their hash; an edit replaces both.
    arguments = models.JSONField()
    args_hash = models.CharField(max_length=64)
    # Why the policy sent it here.
    rule = models.CharField(max_length=64)
    routing_reason = models.TextField()
    threshold = models.FloatField(null=True, blank=True)
    policy_version = models.CharField(max_length=32)
    approvals_required = models.PositiveSmallIntegerField(default=1)
    # The strictest queue tier the request ever needed (its first queue's, raised by an
    # edit the policy routes higher): only queues of at least this tier may hold it.
    required_tier = models.PositiveSmallIntegerField(default=0)
    # Why it is not routine ("foreign_subject", "facts_unavailable"): shown in the inbox.
    flags = models.JSONField(default=list, blank=True)
    # The agent's reason and confidence, as the model stated them (data, never markup).
    rationale = models.TextField(blank=True)
    confidence = models.FloatField(null=True, blank=True)
    # The run's input, what the agent did so far and the records the call touches.
    context = models.JSONField(default=dict)
    due_at = models.DateTimeField()
    reminded_at = models.DateTimeField(null=True, blank=True)
    # Opening a request claims it for a few minutes; others see who is on it.
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claimed_until = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=RequestOutcome.choices, blank=True)
    # The reviewer's feedback on a rejection, returned to the agent as the tool's result.
    feedback = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["due_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=RequestState.values), name="request_state_valid"
            ),
            models.CheckConstraint(
                condition=Q(approvals_required__gte=1), name="request_needs_an_approver"
            ),
            models.CheckConstraint(
                condition=Q(kind="action", action__isnull=False)
                | Q(kind="run", action__isnull=True),
                name="request_action_matches_kind",
            ),
            # A stuck run waits on one request at a time.
            models.UniqueConstraint(
                fields=["run"],
                condition=Q(kind="run", state="pending"),
                name="request_one_pending_per_stuck_run",
            ),
        ]
        indexes = [
            # The inbox: pending requests of a few queues, by due time.
            models.Index(
                fields=["queue", "due_at", "id"],
                condition=Q(state="pending"),
                name="request_pending_by_due",
            ),
            # The inbox's first page: pending requests by due time, the queue filtered
            # from the index entry. Measured at 100,000 pending (bench/inbox.py): the list
            # query went from 9 ms (a bitmap scan and a sort of every visible request) to
            # 0.3 ms; the count uses request_pending_by_due, index-only.
            models.Index(
                fields=["due_at", "id"],
                include=["queue"],
                condition=Q(state="pending"),
                name="request_pending_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tool} for {self.run_id} ({self.state})"

    @property
    def is_pending(self) -> bool:
        return self.state == RequestState.PENDING

    @property
    def is_run_escalation(self) -> bool:
        return self.kind == RequestKind.RUN


class DecisionKind(models.TextChoices):
    APPROVE = "approve"
    EDIT = "edit"  # approve with edited arguments
    REJECT = "reject"
    ESCALATE = "escalate"
    EXPIRE = "expire"  # the SLA ran out (system)


class Decision(models.Model):
    """What one person (or the SLA clock) decided on a request, and why."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="decisions")
    kind = models.CharField(max_length=10, choices=DecisionKind.choices)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The hash of the arguments the person saw (approve) or wrote (edit).
    args_hash = models.CharField(max_length=64)
    arguments = models.JSONField(null=True, blank=True)  # edit: the edited arguments
    reason = models.TextField(blank=True)
    from_queue = models.ForeignKey(Queue, null=True, on_delete=models.PROTECT, related_name="+")
    to_queue = models.ForeignKey(
        Queue, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "id"]
        constraints = [
            # Two-person rules count distinct people: one person approves a hash once.
            models.UniqueConstraint(
                fields=["request", "decided_by", "args_hash"],
                condition=Q(kind__in=["approve", "edit"]),
                name="decision_one_approval_per_person_and_hash",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=DecisionKind.values), name="decision_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} on request {self.request_id}"


class CandidateStatus(models.TextChoices):
    CANDIDATE = "candidate"
    ACCEPTED = "accepted"
    DISCARDED = "discarded"


class GoldenCandidate(models.Model):
    """A reviewer's correction (an edit or a rejection), kept as a possible eval example."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="golden_candidates")
    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="+")
    decision = models.OneToOneField(
        Decision, on_delete=models.CASCADE, related_name="golden_candidate"
    )
    agent_name = models.CharField(max_length=64)
    input = models.JSONField()
    # {"tool": ..., "arguments": ..., "rationale": ..., "confidence": ...}
    proposal = models.JSONField()
    # {"kind": "edit", "arguments": ...} or {"kind": "reject", "feedback": ...}
    correction = models.JSONField()
    # The conversation up to the corrected call (the parked run's messages at the
    # decision); NULL for candidates filed before it was kept, and nullable so that a
    # worker still on the code before it can file candidates during a rolling deploy.
    messages = models.JSONField(default=list, blank=True, null=True)
    reason = models.TextField(blank=True)
    status = models.CharField(
        max_length=10, choices=CandidateStatus.choices, default=CandidateStatus.CANDIDATE
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"candidate from {self.decision}"
