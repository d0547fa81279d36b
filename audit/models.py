"""The audit log: one append-only, hash-chained table of everything that changed."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """Who did what to which object, when, before and after. Append-only and chained.

    Services write an event in the same transaction as the change it describes, through
    ``audit.log.audit_record`` only. PostgreSQL refuses UPDATE, DELETE and TRUNCATE
    on the table (a trigger, agentdesk migration 0005); ``seq`` numbers the events without gaps in
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
        # The table kept its name when the model moved here from agentdesk (migration
        # audit 0001): its triggers and append function name it.
        db_table = "agentdesk_auditevent"
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
