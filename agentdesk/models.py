"""Cross-cutting records of the project: the audit log, API tokens, agent configuration."""

from __future__ import annotations

from django.conf import settings
from django.db import models


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
    """A bearer token for the HTTP API. Only its SHA-256 is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


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
