"""Opening approval requests (called by the worker, inside the step's commit).

The runtime opens requests through ``request_open``, which this app registers with
runs.kernel.approvals: a call's request goes to the queue its policy named, a stuck run's
to its escalation queue, and either to the next queue that exists when that one is gone.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.utils import timezone

from agentdesk.redaction import redact_row
from agents.registry import UnknownAgent, agent_get
from audit.log import audit_record
from audit.models import AuditVerb
from releases.configuration import config_for_run
from reviews.broadcast import queue_changed
from reviews.models import ApprovalRequest, Queue, RequestKind
from runs.kernel.approvals import CallReview, StuckRun
from runs.kernel.review_context import history_summary
from runs.kernel.stepping import args_hash
from runs.models import Run

log = logging.getLogger(__name__)


def request_hash(tool: str, arguments: dict[str, Any]) -> str:
    return args_hash(tool, arguments, "")


class NoQueue(RuntimeError):
    """No queue a request could go to exists: the step fails and the run is dead-lettered.

    Raised inside the step's transaction, so nothing of the step is kept; the run ends
    on the dead-letter list, with this message, where operators look.
    """


def _queue_reaching_a_person(*, run: Run, candidates: list[tuple[str, str]]) -> Queue:
    """The first of ``candidates`` ((slug, why it is one)) that exists; the runtime never
    creates a queue.

    A queue created here would have no reviewers: the request would wait where nobody
    sees it until its SLA decided it. Configuration versions only name queues that
    exist (releases.configuration), but a queue can be deleted after a version naming
    it was saved; the request then goes to the next candidate (the run's escalation
    queue, then its policy's default queue), and the detour is audited on the run.
    """
    slugs = [slug for slug, _ in candidates]
    found = {queue.slug: queue for queue in Queue.objects.filter(slug__in=slugs)}
    for slug, why in candidates:
        queue = found.get(slug)
        if queue is None:
            continue
        if slug != slugs[0]:
            log.warning(
                "run %s: queue %r does not exist; the request goes to %r", run.pk, slugs[0], slug
            )
            audit_record(
                actor=None,
                actor_label="worker",
                verb=AuditVerb.RUN_QUEUE_MISSING,
                object_type="run",
                object_id=str(run.pk),
                after={"named": slugs[0], "used": slug, "because": why},
                trace_id=run.trace_id,
            )
        return queue
    if not candidates:
        raise NoQueue(f"no queue can take this run's request: {run.agent_name!r} is not registered")
    reasons: dict[str, str] = {}
    for slug, why in candidates:
        reasons.setdefault(slug, why)
    listed = ", ".join(f"{slug!r} ({why})" for slug, why in reasons.items())
    raise NoQueue(f"no queue can take this run's request: none of {listed} exists")


def _fallback_queues(run: Run) -> list[tuple[str, str]]:
    """Where a request goes when the queue it names is gone: escalation, then default."""
    try:
        config = config_for_run(run=run, agent=agent_get(run.agent_name))
    except UnknownAgent:
        return []
    return [
        (config.escalation_queue, "the agent's escalation queue"),
        (config.policy.queue, "the policy's default queue"),
    ]


def queue_for_call(*, run: Run, slug: str) -> Queue:
    """The queue the policy named for a call, or where a person still sees it if it is gone."""
    return _queue_reaching_a_person(
        run=run, candidates=[(slug, "named by the policy"), *_fallback_queues(run)]
    )


def _agent_sla_minutes(run: Run) -> int | None:
    """The due time the run's configuration version sets for its requests; None: the queue's."""
    try:
        agent = agent_get(run.agent_name)
    except UnknownAgent:
        return None
    return config_for_run(run=run, agent=agent).sla_minutes


def _request_open(
    *, run: Run, queue: Queue, audit_after: dict[str, Any], **fields: Any
) -> ApprovalRequest:
    """Create a pending request in ``queue``, due after the agent's SLA, else the queue's.

    Only the first queue: a request escalated on (``_move``) gets each next queue's own.

    Every text and JSON column is redacted here (``redact_row``): the routing reason and
    the context quote the run's error, the tool's records and the model's rationale, and
    the request page and the API show them to every reviewer of the queue. Not the
    arguments: the caller hashed them, and they are the action's, redacted when the model
    proposed them (runs.kernel.model_step).
    """
    minutes = _agent_sla_minutes(run) or queue.sla_minutes
    request = ApprovalRequest(
        queue=queue,
        run=run,
        agent_name=run.agent_name,
        due_at=timezone.now() + timedelta(minutes=minutes),
        **fields,
    )
    redact_row(request, keep=("arguments",)).save(force_insert=True)
    audit_record(
        actor=None,
        actor_label="worker",
        verb=AuditVerb.REQUEST_OPENED,
        object_type="approval_request",
        object_id=str(request.pk),
        after={"queue": queue.slug, "due_at": request.due_at.isoformat(), **audit_after},
        trace_id=run.trace_id,
    )
    queue_changed(queue_id=queue.pk, request_id=request.pk, event="opened")
    return request


def approval_request_open(review: CallReview) -> ApprovalRequest:
    """Open the request for one call. Inside the step's transaction, which parks the run.

    Registered as the runtime's opener (``request_open``, reviews.apps): the runtime hands
    over the call as ``runs.kernel.approvals.CallReview`` and records the run's wait itself.
    """
    run, action, tool, verdict = review.run, review.action, review.tool, review.verdict
    digest = request_hash(tool.name, review.arguments)
    queue = queue_for_call(run=run, slug=verdict.queue)
    return _request_open(
        run=run,
        queue=queue,
        audit_after={
            "tool": tool.name,
            "args_hash": digest,
            "rule": verdict.rule,
            "approvals_required": verdict.approvals,
            "required_tier": queue.tier,
            "flags": list(verdict.flags),
        },
        action=action,
        tool=tool.name,
        risk=str(tool.risk),
        arguments=review.arguments,
        args_hash=digest,
        rule=verdict.rule,
        routing_reason=verdict.reason,
        threshold=verdict.threshold,
        policy_version=verdict.policy_version,
        approvals_required=verdict.approvals,
        required_tier=queue.tier,
        flags=list(verdict.flags),
        rationale=action.rationale,
        confidence=action.confidence,
        context=review.context,
    )


def run_escalation_open(*, run: Run, error: dict[str, Any]) -> ApprovalRequest:
    """A run that cannot go on by itself waits on a request in its escalation queue.

    The queue is the run's configuration version's (to the run's end). Inside the
    transaction that parks the run (runs.kernel.transitions.park_for_human). Approving resumes the
    run (the fallback chain from its first link, a fresh budget); rejecting ends it as
    failed with the reviewer's note.
    """
    try:
        policy_version = config_for_run(run=run, agent=agent_get(run.agent_name)).policy.version
    except UnknownAgent:
        policy_version = ""
    queue = _queue_reaching_a_person(run=run, candidates=_fallback_queues(run))
    return _request_open(
        run=run,
        queue=queue,
        required_tier=queue.tier,
        audit_after={"kind": RequestKind.RUN, "error": error["class"]},
        kind=RequestKind.RUN,
        action=None,
        tool="",
        risk="",
        arguments={},
        args_hash=request_hash("", {}),
        rule=error["class"],
        routing_reason=error["message"],
        policy_version=policy_version,
        context={"input": run.input, "history": history_summary(run), "error": error},
    )


def request_open(ask: CallReview | StuckRun) -> int:
    """The runtime's opener (runs.kernel.approvals.register_opener): a call's request, or a stuck
    run's; the request's id."""
    if isinstance(ask, CallReview):
        return approval_request_open(ask).pk
    return run_escalation_open(run=ask.run, error=ask.error).pk
