"""The audit log: one append-only, hash-chained table of everything that changed."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditVerb(models.TextChoices):
    """What an audit event says happened: ``<object>.<what>``, the ``verb`` of AuditEvent.

    Write a member, never a string: this is the one list of what the log can say. Verbs
    composed from a state (``run.<state>``, ``action.<status>``, ``request.<decision>``,
    ``dead_letter.<status>``) are converted with ``AuditVerb(f"...")``, and every state
    they can be composed from has its member (tests/audit/test_audit_verbs.py).

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
    CONFIG_ACTIVATED = "config.activated"  # before releases; still in older logs
    PROMPT_VERSION_CREATED = "prompt.version_created"
    PROMPT_LABEL_MOVED = "prompt.label_moved"  # before releases; still in older logs
    # Releases: a (prompt version, configuration version) pair, and its labels' moves.
    RELEASE_CREATED = "release.created"
    RELEASE_LABEL_MOVED = "release.label_moved"
    # Golden datasets: a new version, and a reviewer's correction accepted into one or not.
    DATASET_VERSION_CREATED = "dataset.version_created"
    CANDIDATE_ACCEPTED = "candidate.accepted"
    CANDIDATE_DISCARDED = "candidate.discarded"
    JUDGE_PROMPT_CREATED = "judge_prompt.created"
    EVAL_STARTED = "eval.started"
    EVAL_FINISHED = "eval.finished"
    PROMOTION_GATE_OVERRIDDEN = "release.gate_overridden"
    DATASET_GATE_CHANGED = "dataset.gate_changed"
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
