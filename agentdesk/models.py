"""Cross-cutting records of the project: API tokens, agent configuration."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models


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

    ``config`` is JSON (``releases.configuration`` reads and writes it): the policy,
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
    """One immutable version of an agent's system prompt template (``releases.prompts``).

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
