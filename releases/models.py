"""Releases: what decides how an agent behaves, pinned, numbered and labelled.

A release pins one prompt version and one configuration version of an agent. Both kinds
of version are immutable content (a change is a new row); the release is the unit that
labels point at, that promotion moves and rollback moves back, and that each run
records. So a rollback restores the prompt and the configuration together.

``AgentConfigVersion`` and ``PromptVersion`` moved here from the agentdesk app with
state-only migrations: their tables keep their names (``db_table``).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AgentConfigVersion(models.Model):
    """One immutable version of an agent's operator-editable configuration.

    ``config`` is JSON (``releases.configuration`` reads and writes it): the policy,
    ``scope`` (a list of tool names, or null for every tool the agent declares),
    ``review_risks``, ``thresholds``, ``rules``, ``queue`` and ``tool_queues``; and
    ``limits``, ``model_tiers`` (endpoint aliases, never URLs or keys),
    ``escalation_queue`` and ``sla_minutes`` (rows from before these existed lack them,
    and their runs take them from the agent's code). Services only ever create rows; a
    release pins one. ``policy_version`` is the ``Policy.version`` hash of the policy, the
    same value each action records, so an action can be traced to the version it saw.
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
        db_table = "agentdesk_agentconfigversion"
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


class PromptVersion(models.Model):
    """One immutable version of an agent's system prompt template (``releases.prompts``).

    ``template`` is a ``string.Template`` (``$name`` placeholders filled from the agent's
    ``prompt_context``). Services only ever create rows; a release pins one.
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
        db_table = "agentdesk_promptversion"
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


class Release(models.Model):
    """One numbered pair (prompt version, configuration version) of an agent; immutable.

    Made by ``releases.services.release_for`` when a label first needs the pair, so two
    releases of one agent never pin the same pair.
    """

    agent_name = models.CharField(max_length=64)
    number = models.PositiveIntegerField()
    prompt_version = models.ForeignKey(
        PromptVersion, on_delete=models.PROTECT, related_name="releases"
    )
    config_version = models.ForeignKey(
        AgentConfigVersion, on_delete=models.PROTECT, related_name="releases"
    )
    note = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent_name", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["agent_name", "number"], name="release_unique_number"),
            models.UniqueConstraint(
                fields=["agent_name", "prompt_version", "config_version"],
                name="release_unique_pair",
            ),
            models.CheckConstraint(
                condition=models.Q(number__gte=1), name="release_number_positive"
            ),
        ]
        permissions = [
            ("promote_production_release", "Can move an agent's production release label"),
            (
                "override_promotion_gate",
                "Can move a release to production without a passing eval, with a reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent_name} release {self.number}"


class LabelName(models.TextChoices):
    """Where a release stands: tried (dev), checked (staging), serving (production)."""

    DEV = "dev"
    STAGING = "staging"
    PRODUCTION = "production"


class ReleaseLabel(models.Model):
    """Which release an agent's label points at; one row per agent and label.

    Moved only by ``releases.services`` under ``select_for_update``. New runs use the
    release of the ``production`` label.
    """

    agent_name = models.CharField(max_length=64)
    label = models.CharField(max_length=16, choices=LabelName.choices)
    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="+")
    moved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    moved_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent_name", "label"], name="release_label_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_name} {self.label} → release {self.release.number}"


class MoveKind(models.TextChoices):
    INITIAL = "initial"  # the first use: every label on release 1
    MOVE = "move"  # dev, which may point anywhere
    PROMOTION = "promotion"  # staging to dev's release, production to staging's
    ROLLBACK = "rollback"  # back to a release the label pointed at before
    ACTIVATION = "activation"  # production to its prompt with another configuration


class ReleaseLabelMove(models.Model):
    """One move of a label, kept so a rollback can only return to where the label has been.

    Written with the move (and its audit event) in one transaction; never changed.
    """

    agent_name = models.CharField(max_length=64)
    label = models.CharField(max_length=16, choices=LabelName.choices)
    from_release = models.ForeignKey(
        Release, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    to_release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=MoveKind.choices)
    # What the promotion gate said (promotions and activations); see releases.gate.
    gate = models.CharField(max_length=300, blank=True)
    moved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    moved_at = models.DateTimeField()

    class Meta:
        ordering = ["-moved_at", "-id"]
        indexes = [
            models.Index(fields=["agent_name", "label"], name="release_move_agent_label"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_name} {self.label} → release {self.to_release.number} ({self.kind})"
