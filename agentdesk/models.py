"""Cross-cutting records of the project: the audit log, API tokens, agent configuration."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models


class AuditVerb(models.TextChoices):
    """What an audit event says happened: ``<object>.<what>``, the ``verb`` of AuditEvent.

    Write a member, never a string: this is the one list of what the log can say. Verbs
    composed from a state (``run.<state>``, ``action.<status>``, ``request.<decision>``,
    ``dead_letter.<status>``) are converted with ``AuditVerb(f"...")``, and every state
    they can be composed from has its member (tests/agentdesk/test_audit_verbs.py).

    Not ``choices`` on the column: an app (or AGENTDESK_EXTRA_APPS) adding a verb would
    need a migration of the audit table, and the stored values are the same either way.
    """

    # Runs: submitted, claimed by a worker, every change of state, their dead letters.
    RUN_SUBMITTED = "run.submitted"
    RUN_STARTED = "run.started"
    RUN_RESUMED = "run.resumed"
    RUN_REQUEUED = "run.requeued"
    RUN_QUEUE_MISSING = "run.queue_missing"
    RUN_QUEUED = "run.queued"
    RUN_RUNNING = "run.running"
    RUN_WAITING_FOR_APPROVAL = "run.waiting_for_approval"
    RUN_NEEDS_HUMAN = "run.needs_human"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    RUN_DEAD_LETTERED = "run.dead_lettered"
    DEAD_LETTER_REQUEUED = "dead_letter.requeued"
    DEAD_LETTER_DISCARDED = "dead_letter.discarded"
    # A proposed tool call and how it ended (``executing`` is not written: the intent
    # marker is on the action, the outcome's event says the call ran).
    ACTION_PROPOSED = "action.proposed"
    ACTION_EXECUTING = "action.executing"
    ACTION_SUCCEEDED = "action.succeeded"
    ACTION_FAILED = "action.failed"
    ACTION_BLOCKED = "action.blocked"
    ACTION_REJECTED = "action.rejected"
    BREAKER_OPENED = "breaker.opened"
    BREAKER_HALF_OPENED = "breaker.half_opened"
    BREAKER_CLOSED = "breaker.closed"
    # Approval requests and the decisions on them.
    REQUEST_OPENED = "request.opened"
    REQUEST_CLAIMED = "request.claimed"
    REQUEST_APPROVE = "request.approve"
    REQUEST_EDIT = "request.edit"
    REQUEST_REJECT = "request.reject"
    REQUEST_DECISION_REFUSED = "request.decision_refused"
    REQUEST_ESCALATED = "request.escalated"
    REQUEST_EXPIRED = "request.expired"
    REQUEST_REMINDED = "request.reminded"
    CANDIDATE_STATUS_CHANGED = "candidate.status_changed"
    RECORDS_REDACTED = "records.redacted"
    # Queues and who may see and decide in them.
    QUEUE_CREATED = "queue.created"
    QUEUE_CHANGED = "queue.changed"
    QUEUE_DELETED = "queue.deleted"
    QUEUE_PERMISSION_GRANTED = "queue.permission_granted"
    QUEUE_PERMISSION_REVOKED = "queue.permission_revoked"
    QUEUE_PERMISSION_REFUSED = "queue.permission_refused"
    # What operators change without a deploy.
    CONFIG_VERSION_CREATED = "config.version_created"
    CONFIG_ACTIVATED = "config.activated"
    PROMPT_VERSION_CREATED = "prompt.version_created"
    PROMPT_LABEL_MOVED = "prompt.label_moved"
    # People, groups and tokens.
    USER_LOGGED_IN = "user.logged_in"
    USER_LOGGED_OUT = "user.logged_out"
    USER_CREATED = "user.created"
    USER_ACCESS_CHANGED = "user.access_changed"
    USER_DELETED = "user.deleted"
    GROUP_CREATED = "group.created"
    GROUP_PERMISSIONS_CHANGED = "group.permissions_changed"
    GROUP_DELETED = "group.deleted"
    API_TOKEN_CREATED = "api_token.created"
    API_TOKEN_REVOKED = "api_token.revoked"


class AuditEvent(models.Model):
    """Who did what to which object, when, before and after. Append-only and chained.

    Services write an event in the same transaction as the change it describes, through
    ``agentdesk.audit.audit_record`` only. PostgreSQL refuses UPDATE, DELETE and TRUNCATE
    on the table (a trigger, migration 0003); ``seq`` numbers the events without gaps in
    the order they were chained, and ``hash`` is the SHA-256 of the event's content and the
    previous event's hash, so ``manage.py audit_verify`` finds any row changed behind the
    trigger's back.
    """

    seq = models.BigIntegerField(unique=True)
    created_at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # "system", "worker" or the username: readable even when the user is later renamed.
    actor_label = models.CharField(max_length=150)
    verb = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    trace_id = models.CharField(max_length=32, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-seq"]
        # The auditor pages filter on one of these and page by seq (keyset, newest first):
        # each index ends in seq so the filter and the order come from the same index.
        indexes = [
            models.Index(fields=["object_type", "object_id", "seq"], name="audit_object_seq"),
            models.Index(fields=["actor_label", "seq"], name="audit_actor_seq"),
            models.Index(fields=["trace_id", "seq"], name="audit_trace_seq"),
            models.Index(
                fields=["verb", "seq"],
                name="audit_verb_seq",
                opclasses=["varchar_pattern_ops", "int8_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.actor_label} {self.verb} {self.object_type}:{self.object_id}"


class ApiToken(models.Model):
    """A bearer token for the HTTP API. Only its SHA-256 is stored.

    A token is revoked, never deleted, so the list and the audit log keep saying which
    key existed and who ended it. ``expires_at`` NULL: until revoked.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The last call the token was let through (not a call refused for want of access).
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self, now: datetime) -> bool:
        return self.status(now) == "active"

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


class AgentConfigVersion(models.Model):
    """One immutable version of an agent's operator-editable configuration.

    ``config`` is JSON (``agentdesk.configuration`` reads and writes it): the policy,
    ``scope`` (a list of tool names, or null for every tool the agent declares),
    ``review_risks``, ``thresholds``, ``rules``, ``queue`` and ``tool_queues``; and
    ``limits``, ``model_tiers`` (endpoint aliases, never URLs or keys),
    ``escalation_queue`` and ``sla_minutes`` (rows from before these existed lack them,
    and their runs take them from the agent's code). Services
    only ever create rows; a change is a new version, and activation moves the pointer in
    ``AgentConfigActive``. ``policy_version`` is the ``Policy.version`` hash of the policy,
    the same value each action records, so an action can be traced to the version it saw.
    """

    agent_name = models.CharField(max_length=64)
    number = models.PositiveIntegerField()
    config = models.JSONField()
    note = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    policy_version = models.CharField(max_length=32)

    class Meta:
        ordering = ["agent_name", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent_name", "number"], name="agent_config_version_unique_number"
            ),
            models.CheckConstraint(
                condition=models.Q(number__gte=1), name="agent_config_version_number_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent_name} v{self.number}"


class AgentConfigActive(models.Model):
    """Which version of an agent's configuration new runs use; one row per agent.

    Changed only by ``configuration.config_activate`` under ``select_for_update``.
    """

    agent_name = models.CharField(max_length=64, unique=True)
    version = models.ForeignKey(AgentConfigVersion, on_delete=models.PROTECT, related_name="+")
    changed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.agent_name} → v{self.version.number}"


class PromptLabelName(models.TextChoices):
    """Where a prompt version stands: tried (dev), checked (staging), serving (production)."""

    DEV = "dev"
    STAGING = "staging"
    PRODUCTION = "production"


class PromptVersion(models.Model):
    """One immutable version of an agent's system prompt template (``agentdesk.prompts``).

    ``template`` is a ``string.Template`` (``$name`` placeholders filled from the agent's
    ``prompt_context``). Services only ever create rows; a change is a new version, and the
    labels in ``PromptLabel`` say which version dev, staging and production use.
    ``content_hash`` is the SHA-256 of ``template``: two versions of one agent never hold
    the same text.
    """

    agent_name = models.CharField(max_length=64)
    number = models.PositiveIntegerField()
    template = models.TextField()
    note = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    content_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["agent_name", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent_name", "number"], name="prompt_version_unique_number"
            ),
            models.UniqueConstraint(
                fields=["agent_name", "content_hash"], name="prompt_version_unique_content"
            ),
            models.CheckConstraint(
                condition=models.Q(number__gte=1), name="prompt_version_number_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent_name} prompt {self.ref}"

    @property
    def ref(self) -> str:
        """What a run and each of its steps record: ``v3-`` and 10 hex digits of the hash.

        The number is for people; the hash proves which text it was, whatever happens to
        the numbering of another database (a restore, a copy to staging).
        """
        return f"v{self.number}-{self.content_hash[:10]}"


class PromptLabel(models.Model):
    """Which version an agent's label points at; one row per agent and label.

    Moved only by ``prompts.prompt_label_move`` under ``select_for_update``. New runs use
    the version of the ``production`` label.
    """

    agent_name = models.CharField(max_length=64)
    label = models.CharField(max_length=16, choices=PromptLabelName.choices)
    version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="+")
    moved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    moved_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent_name", "label"], name="prompt_label_unique"),
        ]
        permissions = [
            ("promote_production_prompt", "Can move an agent's production prompt label"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_name} {self.label} → v{self.version.number}"


class PromptLabelMoveKind(models.TextChoices):
    INITIAL = "initial"  # the first use: every label on version 1
    MOVE = "move"  # dev, which may point anywhere
    PROMOTION = "promotion"  # staging to dev's version, production to staging's
    ROLLBACK = "rollback"  # back to a version the label pointed at before


class PromptLabelMove(models.Model):
    """One move of a label, kept so a rollback can only return to where the label has been.

    Written with the move (and its audit event) in one transaction; never changed.
    """

    agent_name = models.CharField(max_length=64)
    label = models.CharField(max_length=16, choices=PromptLabelName.choices)
    from_version = models.ForeignKey(
        PromptVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    to_version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=PromptLabelMoveKind.choices)
    # What the promotion gate said (promotions only); see prompts.prompt_promotion_gate.
    gate = models.CharField(max_length=300, blank=True)
    moved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    moved_at = models.DateTimeField()

    class Meta:
        ordering = ["-moved_at", "-id"]
        indexes = [
            models.Index(fields=["agent_name", "label"], name="prompt_move_agent_label"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_name} {self.label} → v{self.to_version.number} ({self.kind})"
