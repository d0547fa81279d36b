"""Runs, their steps and the actions the model proposed.

PostgreSQL is the only source of truth: a run's checkpoint (the conversation and the
pending tool calls) lives on the row, so any worker on any host can continue it.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class RunState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_FOR_APPROVAL = "waiting_for_approval"
    # Parked for a person: every link of the fallback chain failed, or a limit was reached
    # with on_exceeded=escalate. The approval queue turns these into requests.
    NEEDS_HUMAN = "needs_human"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD_LETTERED = "dead_lettered"


TERMINAL_STATES = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.DEAD_LETTERED}
)
ACTIVE_STATES = frozenset({RunState.QUEUED, RunState.RUNNING})


class RunPurpose(models.TextChoices):
    """Why a run exists. Only a live run acts on the world.

    An eval or shadow run is a sandbox (runs.kernel.sandbox): its read tools run for real,
    its write and irreversible tools never run (their calls are recorded and answered
    with a synthetic result), its calls that the policy would send to review are recorded
    as such and go on as if approved, and a run that would need a person stops there.
    Nothing it does reaches a customer, a reviewer's queue or a side-effect table, and the
    runs pages list live runs only.
    """

    LIVE = "live"
    EVAL = "eval"
    SHADOW = "shadow"


class Degradation(models.TextChoices):
    """Why a run's outcome is not a plain success, though it may have ended as one."""

    FALLBACK_MODEL = "fallback_model", "served by a fallback model"
    RULE_FALLBACK = "rule_fallback", "served by the rule-based fallback"
    RETRIED = "retried", "needed retries"
    BREAKER_OPEN = "breaker_open", "met an open circuit breaker"
    VERIFICATION_FAILED = "verification_failed", "a verifier refused a call or an answer"
    HANDOFF_FAILED = "handoff_failed", "a hand-off could not be filed"


class Run(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent_name = models.CharField(max_length=64, db_index=True)
    input = models.JSONField()
    state = models.CharField(max_length=24, choices=RunState.choices, default=RunState.QUEUED)
    trace_id = models.CharField(max_length=32, unique=True)
    prompt_version = models.CharField(max_length=32)
    model = models.CharField(max_length=100)

    # The checkpoint: everything needed to continue. ``messages`` is the conversation in
    # Chat Completions form; ``pending_actions`` the ids of proposed tool calls not yet run.
    checkpoint = models.JSONField(default=dict)
    # The sequence number of the next step. A step task carries the number it was enqueued
    # for; a task whose number no longer matches is a redelivery and does nothing.
    next_seq = models.PositiveIntegerField(default=0)
    # The claim of the worker currently executing the next step; it expires so that a
    # worker killed mid-step does not hold the run forever.
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # How many times the next step has been claimed. More than one means a worker died
    # (or lost its lease) mid-step; past MAX_STEP_ATTEMPTS the run fails rather than loop.
    step_attempts = models.PositiveSmallIntegerField(default=0)
    # When the next step was last put on the broker; the stalled-run sweeper uses it.
    enqueued_at = models.DateTimeField(null=True, blank=True)

    tool_calls = models.PositiveIntegerField(default=0)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    model_latency_ms = models.PositiveIntegerField(default=0)

    output = models.TextField(blank=True)
    error = models.JSONField(null=True, blank=True)
    # Degradation values, each once, in the order they first happened: empty for a run
    # that got everything it needed from its primary models at the first attempt.
    degraded = models.JSONField(default=list, blank=True)

    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="submitted_runs",
    )
    # NULL, not "", when absent: the unique constraint must not treat runs without a key
    # as duplicates of each other.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    request_hash = models.CharField(max_length=64)
    # The agent's production release when the run was created, and the configuration
    # version it pins; the run keeps both to its end while labels move. NULL for runs
    # created before releases (release) or configuration versions (both) existed.
    release = models.ForeignKey(
        "releases.Release",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="runs",
    )
    config_version = models.ForeignKey(
        "releases.AgentConfigVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="runs",
    )

    purpose = models.CharField(max_length=8, choices=RunPurpose.choices, default=RunPurpose.LIVE)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # ``view_run`` opens the runs pages; which runs they show is scoped by queue (a
        # reviewer sees the runs with requests in queues they may open). ``view_all_runs``
        # is the role grant of operators and auditors: every run, whatever its queues.
        permissions = [("view_all_runs", "Can view every run, whatever its queues")]
        constraints = [
            models.UniqueConstraint(
                fields=["submitted_by", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                # Submissions without a user (the CLI, Python) share one key space.
                nulls_distinct=False,
                name="run_unique_idempotency_key_per_submitter",
            ),
            models.CheckConstraint(condition=Q(state__in=RunState.values), name="run_state_valid"),
        ]
        indexes = [
            models.Index(fields=["state", "enqueued_at"], name="run_state_enqueued"),
            models.Index(fields=["-created_at"], name="run_created_desc"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_name} run {self.id}"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def degraded_labels(self) -> list[str]:
        """The reasons in ``degraded``, in words (an unknown value as it is stored)."""
        labels = dict(Degradation.choices)
        return [labels.get(reason, reason) for reason in self.degraded or ()]

    @property
    def is_sandbox(self) -> bool:
        """An eval or shadow run: nothing it does acts on the world (RunPurpose)."""
        return self.purpose != RunPurpose.LIVE

    @property
    def is_active(self) -> bool:
        """Queued or running: a worker will move it on without anyone acting."""
        return self.state in ACTIVE_STATES


class StepKind(models.TextChoices):
    MODEL = "model"
    TOOL = "tool"


class StepStatus(models.TextChoices):
    OK = "ok"
    ERROR = "error"


class Step(models.Model):
    """One model call or one tool call: state → action → outcome."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=8, choices=StepKind.choices)
    # What the agent knew: the size of the conversation and its last message.
    state = models.JSONField(default=dict)
    # What it intended: the proposed tool calls or a final answer (model steps); the tool
    # and its arguments (tool steps).
    action = models.JSONField(default=dict)
    reason = models.TextField(blank=True)
    confidence = models.FloatField(null=True, blank=True)
    outcome = models.JSONField(default=dict)
    status = models.CharField(max_length=8, choices=StepStatus.choices)
    error_class = models.CharField(max_length=40, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    # None when the price table does not know the model (a local model, say).
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    model = models.CharField(max_length=100, blank=True)
    # The link of the fallback chain that served a model step: "gpt-4o-mini@default",
    # "rule" or "human"; empty for tool steps.
    route = models.CharField(max_length=140, blank=True)
    prompt_version = models.CharField(max_length=32, blank=True)
    # Which attempt at this piece of work the step records: a retried model or tool call
    # leaves one step per attempt, each with its error class.
    attempt = models.PositiveSmallIntegerField(default=1)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            # A redelivered or duplicated step task can never record a step twice.
            models.UniqueConstraint(fields=["run", "seq"], name="step_unique_seq_per_run"),
        ]

    def __str__(self) -> str:
        return f"step {self.seq} ({self.kind}) of {self.run_id}"


class Verdict(models.TextChoices):
    EXECUTE = "execute"
    REVIEW = "review"
    BLOCK = "block"
    # The policy never saw the call: it was refused before (an unknown tool, arguments
    # that are not a JSON object or fail the schema, a verifier's refusal), or it has not
    # been evaluated yet. The default, so that no call reads "execute" unless the policy
    # said so.
    NOT_EVALUATED = "not_evaluated"


class ActionStatus(models.TextChoices):
    PROPOSED = "proposed"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    # A reviewer (or the SLA clock) said no; the feedback went back to the model.
    REJECTED = "rejected"


class ReviewOutcome(models.TextChoices):
    """How the people (or the SLA clock) resolved a call the policy sent to review."""

    APPROVED = "approved"
    EDITED = "edited"  # approved with the arguments a reviewer edited
    REJECTED = "rejected"
    EXPIRED_APPROVED = "expired_approved"  # nobody decided in time; the queue approves
    EXPIRED_REJECTED = "expired_rejected"  # nobody decided in time; the queue rejects


# The outcomes under which the call runs, with the arguments they approved.
GRANTED_OUTCOMES = frozenset(
    {ReviewOutcome.APPROVED, ReviewOutcome.EDITED, ReviewOutcome.EXPIRED_APPROVED}
)


class Action(models.Model):
    """A tool call the model proposed, with its arguments, their hash and its key.

    A call the policy sent to review also carries how it was resolved (``review_*``,
    ``approved_*``, ``decided_*``), written by the decision that resolved it, in the
    decision's transaction (runs.kernel.approvals.action_decision_record): the resumed step reads
    the action, never the approvals side's records.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="actions")
    # The model step that proposed it and its index among that step's calls.
    proposed_seq = models.PositiveIntegerField()
    index = models.PositiveSmallIntegerField()
    tool_call_id = models.CharField(max_length=100)
    tool = models.CharField(max_length=100)
    # The raw argument string as the model sent it, and the parsed arguments without the
    # reserved rationale/confidence fields (None when the string was not a JSON object).
    raw_arguments = models.TextField()
    arguments = models.JSONField(null=True, blank=True)
    args_hash = models.CharField(max_length=64)
    rationale = models.TextField(blank=True)
    confidence = models.FloatField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=120, unique=True)
    verdict = models.CharField(
        max_length=16, choices=Verdict.choices, default=Verdict.NOT_EVALUATED
    )
    verdict_reason = models.CharField(max_length=500, blank=True)
    # Which rule fired ("scope", "risk", "threshold" or a review rule's name) and the
    # content hash of the policy that gave the verdict; empty until the policy has run.
    policy_rule = models.CharField(max_length=64, blank=True)
    policy_version = models.CharField(max_length=32, blank=True)
    status = models.CharField(
        max_length=10, choices=ActionStatus.choices, default=ActionStatus.PROPOSED
    )
    result = models.JSONField(null=True, blank=True)
    error_class = models.CharField(max_length=40, blank=True)
    step = models.OneToOneField(
        Step, null=True, blank=True, on_delete=models.SET_NULL, related_name="executed_action"
    )
    # The call's exposure, as its facts gave it when the policy ruled (runs.kernel.exposure): the
    # run's subject, the record it acts on ("order:SO-0001") and the money it moves. Only
    # calls that move money carry them; the policy's sums add them up.
    subject = models.CharField(max_length=254, blank=True)
    record = models.CharField(max_length=120, blank=True)
    amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    # How a review resolved the call; empty while it is not reviewed or not decided yet.
    review_outcome = models.CharField(max_length=20, choices=ReviewOutcome.choices, blank=True)
    # What an approval covers: the arguments exactly as approved (a reviewer's edit
    # included) and their hash; the step runs these and checks the hash first.
    approved_arguments = models.JSONField(null=True, blank=True)
    approved_args_hash = models.CharField(max_length=64, blank=True)
    # A rejection's words for the model, returned as the call's result.
    review_feedback = models.TextField(blank=True)
    # Who resolved it (NULL: the SLA clock) and when.
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    executed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "proposed_seq", "index"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "proposed_seq", "index"], name="action_unique_position"
            ),
            # An approval names what it approved; a rejection says why.
            models.CheckConstraint(
                condition=~Q(review_outcome__in=sorted(GRANTED_OUTCOMES))
                | (Q(approved_arguments__isnull=False) & ~Q(approved_args_hash="")),
                name="action_granted_names_its_arguments",
            ),
        ]
        indexes = [
            # The sums over a subject and over a record within the policy's window; partial,
            # so calls that move no money (most of them) cost the index nothing.
            models.Index(
                fields=["subject", "created_at"],
                name="action_subject_exposure",
                condition=models.Q(amount__isnull=False),
            ),
            models.Index(
                fields=["record", "created_at"],
                name="action_record_exposure",
                condition=models.Q(amount__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tool} ({self.status}) in {self.run_id}"


class BreakerState(models.TextChoices):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker(models.Model):
    """The shared state of one circuit breaker (a model endpoint or a tool).

    In PostgreSQL rather than process memory so that every worker process on every host
    sees the same breaker; see runs.gateway.breakers for the transitions.
    """

    name = models.CharField(max_length=120, unique=True)  # "model:<endpoint>", "tool:<name>"
    state = models.CharField(
        max_length=10, choices=BreakerState.choices, default=BreakerState.CLOSED
    )
    # Failures in the current window (reset by a success or when the window passes), and
    # failures since the last success, however slowly they came (reset by a success only).
    failure_count = models.PositiveIntegerField(default=0)
    consecutive_failures = models.PositiveIntegerField(default=0)
    window_started_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    # While half-open, the one call allowed through to probe the dependency.
    probe_started_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_error_class = models.CharField(max_length=40, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=BreakerState.values), name="breaker_state_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"


class DeadLetterStatus(models.TextChoices):
    OPEN = "open"
    REQUEUED = "requeued"
    DISCARDED = "discarded"


class DeadLetter(models.Model):
    """A run that could not go on after retries and fallbacks, kept for an operator.

    The run itself holds the input, the last checkpoint and the trace id; the letter adds
    why it stopped and what an operator did about it (requeue from the checkpoint, or
    discard).
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="dead_letters")
    seq = models.PositiveIntegerField()  # the step it could not take
    error = models.JSONField()
    status = models.CharField(
        max_length=10, choices=DeadLetterStatus.choices, default=DeadLetterStatus.OPEN
    )
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["run"],
                condition=Q(status="open"),
                name="dead_letter_one_open_per_run",
            ),
        ]

    def __str__(self) -> str:
        return f"dead letter of {self.run_id} ({self.status})"
