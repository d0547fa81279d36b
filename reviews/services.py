"""Approval requests: open, claim, decide, escalate, expire, and resume the run once.

Every transition locks the request row (``select_for_update``) and checks its state
before it changes anything, so two reviewers pressing "approve" at the same moment make
one decision: the second waits for the first's commit, then finds the request decided
and is told who decided and how. Each transition writes its audit event in the same
transaction, and a decision that completes a request moves the run from
waiting_for_approval back to running and enqueues its next step on commit: exactly one
resume, because only the transaction that changes the run's state enqueues it.

A decision that resolves a call writes its outcome onto the call's action in the same
transaction (the approved arguments, which an edit replaced, and their hash; or the
feedback; and who): the run then executes the call as approved or, on a rejection, hands
the feedback to the model as the tool's result, reading only the action (runs.kernel.tool_step).
The runtime opens requests through ``request_open``, which this app registers with
runs.kernel.approvals; the run's changes of state are runs.kernel.transitions'.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone
from pydantic import ValidationError

from agentdesk.redaction import redact_row, redact_text, redact_value
from agents.definition import Tool
from agents.registry import UnknownAgent, agent_get
from audit.log import audit_record
from policy.engine import Decision as PolicyDecision
from policy.engine import Verdict, policy_evaluate
from releases.configuration import config_for_run, config_policy_for_run
from reviews.broadcast import queue_changed
from reviews.models import (
    ApprovalRequest,
    Decision,
    DecisionKind,
    ExpiryOutcome,
    GoldenCandidate,
    Queue,
    RequestKind,
    RequestState,
)
from runs.kernel.approvals import CallReview, StuckRun, action_decision_record
from runs.kernel.exposure import exposure_facts, exposure_summed, subject_locked
from runs.kernel.review_context import history_summary
from runs.kernel.stepping import args_hash
from runs.kernel.transitions import finish, run_resume
from runs.models import Action, ReviewOutcome, Run, RunState

log = logging.getLogger(__name__)

CLAIM_MINUTES = 5
FEEDBACK_MAX = 2000
SLA = "sla"  # the actor label of what the SLA clock does on its own


class DecisionRefused(Exception):
    """A decision that cannot be taken; nothing was saved. ``message`` says why."""

    def __init__(self, message: str, *, field_errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field_errors = field_errors or {}


class AlreadyDecided(DecisionRefused):
    """Someone else decided first; ``request`` is the decided request."""

    def __init__(self, request: ApprovalRequest) -> None:
        who = request.decisions.exclude(kind=DecisionKind.ESCALATE).last()
        by = who.decided_by.get_username() if who and who.decided_by else "the SLA clock"
        when = (
            timezone.localtime(request.decided_at).strftime("%H:%M:%S")
            if request.decided_at
            else ""
        )
        super().__init__(f"Already {request.outcome.replace('_', ' ')} by {by} at {when}.")
        self.request = request


class DutyRefused(DecisionRefused):
    """Separation of duties (invariant 14): this person may not take this decision.

    Audited as ``request.decision_refused`` (``_duty_audited``); nothing else changes.
    ``rule``: "submitter" (their own run) or "second_approval" (they approved already).
    """

    def __init__(self, message: str, *, request: ApprovalRequest, rule: str) -> None:
        super().__init__(message)
        self.request_id = request.pk
        self.trace_id = request.run.trace_id
        self.rule = rule


P = ParamSpec("P")
R = TypeVar("R")


def _duty_audited(kind: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Record a decision refused for separation of duties, after its transaction rolled back.

    The refusal is raised inside the decision's transaction (which undoes whatever it
    had begun); its audit event is written here, in a transaction of its own, so that
    it stays.
    """

    def wrap(decide: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(decide)
        def audited(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return decide(*args, **kwargs)
            except DutyRefused as exc:
                with transaction.atomic():
                    audit_record(
                        actor=kwargs["user"],  # type: ignore[arg-type]
                        verb="request.decision_refused",
                        object_type="approval_request",
                        object_id=str(exc.request_id),
                        after={"decision": str(kind), "rule": exc.rule, "reason": exc.message},
                        trace_id=exc.trace_id,
                    )
                raise

        return audited

    return wrap


def decider_barrier(*, request: ApprovalRequest, user: Any) -> str:
    """Why ``user``, whose permissions let them decide ``request``, still may not; "" if not.

    Nobody decides a request of a run they submitted, unless its queue lets submitters
    decide; never a request that needs more than one approver (its approvers are
    distinct people and none of them submitted the run). Escalating is not deciding:
    it only moves the request to other people, so a submitter may do it.
    """
    submitter = request.run.submitted_by_id
    if submitter is None or submitter != getattr(user, "pk", None):
        return ""
    if request.approvals_required > 1:
        return (
            "You submitted this run: a request that needs several approvers is decided by "
            "people other than the run's submitter. Escalate it, or ask another reviewer."
        )
    if not request.queue.submitter_may_decide:
        return (
            f"You submitted this run: in {request.queue.name} someone else decides its "
            "requests. Escalate it, or ask another reviewer."
        )
    return ""


def _refuse_own_run(request: ApprovalRequest, user: User) -> None:
    """DutyRefused where ``decider_barrier`` names a reason; call after ``_locked_pending``."""
    barrier = decider_barrier(request=request, user=user)
    if barrier:
        raise DutyRefused(barrier, request=request, rule="submitter")


def shown_arguments(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    """Validated arguments as JSON, the form a reviewer sees and an approval hashes."""
    validated = tool.input_schema.model_validate(arguments)
    shown: dict[str, Any] = json.loads(validated.model_dump_json())
    return shown


def request_hash(tool: str, arguments: dict[str, Any]) -> str:
    return args_hash(tool, arguments, "")


# --- opening (called by the worker, inside the step's commit) ------------------------------


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
                verb="run.queue_missing",
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
        verb="request.opened",
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


# --- claiming ------------------------------------------------------------------------------


def approval_claim(*, request_id: int, user: User) -> ApprovalRequest:
    """Claim a pending request for CLAIM_MINUTES, unless someone else holds a live claim.

    Claims are advisory: they tell others who is on it; anyone allowed may still decide.
    Claiming one request releases the user's claims on any others.
    """
    now = timezone.now()
    with transaction.atomic():
        request = ApprovalRequest.objects.select_for_update().get(pk=request_id)
        if not request.is_pending:
            return request
        held = request.claimed_until is not None and request.claimed_until > now
        if held and request.claimed_by_id not in (None, user.pk):
            return request
        request.claimed_by = user
        request.claimed_until = now + timedelta(minutes=CLAIM_MINUTES)
        request.save(update_fields=["claimed_by", "claimed_until"])
        # A reviewer is on one request at a time: opening the next one frees the last.
        released = list(
            ApprovalRequest.objects.filter(claimed_by=user, claimed_until__gt=now)
            .exclude(pk=request.pk)
            .values_list("pk", "queue_id")
        )
        if released:
            ApprovalRequest.objects.filter(pk__in=[pk for pk, _ in released]).update(
                claimed_until=None
            )
            for pk, queue_id in released:
                queue_changed(queue_id=queue_id, request_id=pk, event="released")
        if not held:
            audit_record(
                actor=user,
                verb="request.claimed",
                object_type="approval_request",
                object_id=str(request.pk),
                after={"claimed_until": request.claimed_until.isoformat()},
                trace_id=request.run.trace_id,
            )
            queue_changed(queue_id=request.queue_id, request_id=request.pk, event="claimed")
    return request


# --- deciding ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    request: ApprovalRequest
    decision: Decision
    completed: bool  # the request is decided (not waiting for more approvers)


def _locked_pending(request_id: int, *, deciding: bool = True) -> ApprovalRequest:
    """The request and its run, both locked, before anything writes an audit event.

    Lock order: row locks first, then audit_record's chain lock (held to commit). The
    worker takes the run's lock before its audit events too, so the two never wait on
    each other in opposite orders.
    """
    request = (
        ApprovalRequest.objects.select_for_update(of=("self", "run"))
        .select_related("queue", "run")
        .get(pk=request_id)
    )
    if not request.is_pending:
        raise AlreadyDecided(request)
    if deciding and request.queue.tier < request.required_tier:
        # Its queue's tier was lowered after it arrived: its reviewers no longer hold the
        # authority it needs.
        raise DecisionRefused(
            f"This request needs a queue of tier {request.required_tier}; {request.queue.name} "
            f"is now tier {request.queue.tier}. Escalate it to a queue of that tier."
        )
    return request


def _tool_of(request: ApprovalRequest) -> Tool:
    try:
        tool = agent_get(request.agent_name).tool(request.tool)
    except UnknownAgent:
        tool = None
    if tool is None:
        raise DecisionRefused(
            f"the agent {request.agent_name!r} no longer has the tool {request.tool!r}"
        )
    return tool


@_duty_audited(DecisionKind.APPROVE)
def approval_approve(*, request_id: int, user: User, seen_hash: str, reason: str = "") -> Outcome:
    """Approve the arguments whose hash the reviewer saw. Used once; a stale hash is refused."""
    with transaction.atomic():
        request = _locked_pending(request_id)
        _refuse_own_run(request, user)
        if seen_hash != request.args_hash:
            raise DecisionRefused(
                "The arguments changed since you opened this request (someone edited them). "
                "Review the current arguments and decide again."
            )
        decision = _add_approval(request, user, DecisionKind.APPROVE, None, reason)
        return _after_approval(request, decision, outcome="approved")


@_duty_audited(DecisionKind.EDIT)
def approval_edit(
    *,
    request_id: int,
    user: User,
    seen_hash: str,
    arguments: dict[str, Any],
    reason: str = "",
) -> Outcome:
    """Approve edited arguments, validated against the tool's schema before anything is saved.

    The edited arguments go through the policy again, so an edit cannot lower the bar:
    arguments the policy blocks are refused; arguments a review rule would send to another
    queue are refused (escalate the request there first); and the number of approvers
    rises to what the policy asks for the new arguments, never falls. With a two-person
    rule the edit counts as the editor's approval of the new arguments; approvals given
    to the old arguments no longer count.
    """
    with transaction.atomic():
        request = _locked_pending(request_id)
        _refuse_own_run(request, user)
        if request.is_run_escalation:
            raise DecisionRefused("A stuck run has no arguments to edit: resume it or end it.")
        if seen_hash != request.args_hash:
            raise DecisionRefused(
                "The arguments changed since you opened this request. Review them again."
            )
        tool = _tool_of(request)
        try:
            # Redacted before the hash: what a person typed is stored, shown and run as is.
            edited = shown_arguments(tool, redact_value(arguments))
        except ValidationError as exc:
            errors: dict[str, list[str]] = {}
            for error in exc.errors(include_url=False):
                name = ".".join(str(part) for part in error["loc"]) or "__all__"
                errors.setdefault(name, []).append(error["msg"])
            raise DecisionRefused(
                f"The edited arguments do not match the {tool.name} schema.", field_errors=errors
            ) from None
        new_hash = request_hash(tool.name, edited)
        if new_hash == request.args_hash:
            raise DecisionRefused("Nothing was changed: approve instead of editing.")
        verdict = _policy_on_edit(request, tool, edited)
        before = {
            "arguments": request.arguments,
            "args_hash": request.args_hash,
            "approvals_required": request.approvals_required,
        }
        request.arguments = edited
        request.args_hash = new_hash
        if verdict.approvals > request.approvals_required:
            request.approvals_required = verdict.approvals
            request.routing_reason = f"{request.routing_reason}; after the edit: {verdict.reason}"
        request.save(
            update_fields=[
                "arguments",
                "args_hash",
                "approvals_required",
                "routing_reason",
                "required_tier",
                "flags",
                "context",
            ]
        )
        decision = _add_approval(request, user, DecisionKind.EDIT, edited, reason, before=before)
        return _after_approval(request, decision, outcome="edited")


def _policy_on_edit(request: ApprovalRequest, tool: Tool, edited: dict[str, Any]) -> PolicyDecision:
    """The whole policy's verdict on the edited arguments, facts and sums included.

    DecisionRefused where it forbids them: arguments the policy blocks; arguments that
    reach another subject's records (whatever the policy's mode: a reviewer never moves a
    call there); arguments a rule routes to another queue, or that need a queue of a
    higher tier than this one (escalate there first). Judged under the subject's lock and
    recorded on the action, so the sums of the next call count the edited amount.
    """
    agent = agent_get(request.agent_name)
    run = request.run
    policy = config_policy_for_run(run=run, agent=agent)  # the run's version, not today's
    arguments = tool.input_schema.model_validate(edited).model_dump()
    exposure = exposure_facts(
        agent=agent, tool_name=tool.name, arguments=arguments, run_input=run.input
    )
    subject_locked(exposure.evidence.subject)
    exposure = exposure_summed(
        exposure, policy=policy, run_id=run.pk, exclude_action=request.action_id
    )
    verdict = policy_evaluate(
        policy=policy,
        tool_name=tool.name,
        risk=tool.risk,
        arguments=arguments,
        confidence=request.confidence,
        run_input=run.input,
        run_facts={
            "steps": run.next_seq,
            "tool_calls": run.tool_calls,
            "cost_usd": float(run.cost_usd),
        },
        evidence=exposure.evidence,
    )
    if exposure.evidence.foreign:
        raise DecisionRefused(
            "The edited arguments reach records of another customer than the run's "
            f"({', '.join(exposure.evidence.foreign)}); a call cannot be moved there."
        )
    if verdict.verdict == Verdict.BLOCK:
        raise DecisionRefused(f"The policy blocks these arguments: {verdict.reason}.")
    if verdict.verdict == Verdict.REVIEW:
        target = Queue.objects.filter(slug=verdict.queue).first()
        needed = target.tier if target is not None else request.queue.tier
        routine = {request.rule, "risk", "threshold"}
        if needed > request.queue.tier or (
            verdict.rule not in routine and verdict.queue != request.queue.slug
        ):
            raise DecisionRefused(
                f"These arguments fall under the rule {verdict.rule} ({verdict.reason}), which "
                f"sends them to the queue {verdict.queue!r}"
                + (
                    f" (tier {needed}, above this queue's {request.queue.tier})"
                    if needed > request.queue.tier
                    else ""
                )
                + ". Escalate the request there, or reject it with feedback."
            )
        request.required_tier = max(request.required_tier, needed)
    request.flags = sorted({*request.flags, *verdict.flags})
    if request.action_id is not None:
        Action.objects.filter(pk=request.action_id).update(**exposure.action_fields())
    context = dict(request.context)
    context["evidence"] = exposure.evidence.as_json()
    request.context = context
    return verdict


def _decision_create(*, reason: str = "", **fields: Any) -> Decision:
    """Save a decision, its reason and edited arguments redacted: what a person typed.

    The reason is cut to FEEDBACK_MAX after it is redacted: a cut through a secret would
    leave its first half.
    """
    decision = Decision(reason=redact_text(reason)[:FEEDBACK_MAX], **fields)
    redact_row(decision).save(force_insert=True)
    return decision


def _add_approval(
    request: ApprovalRequest,
    user: User,
    kind: DecisionKind,
    arguments: dict[str, Any] | None,
    reason: str,
    *,
    before: dict[str, Any] | None = None,
) -> Decision:
    try:
        with transaction.atomic():  # a savepoint: the outer transaction survives the refusal
            decision = _decision_create(
                request=request,
                kind=kind,
                decided_by=user,
                args_hash=request.args_hash,
                arguments=arguments,
                reason=reason,
                from_queue=request.queue,
            )
    except IntegrityError:
        raise DutyRefused(
            "You have already approved these arguments; a second person must approve them.",
            request=request,
            rule="second_approval",
        ) from None
    audit_record(
        actor=user,
        verb=f"request.{kind}",
        object_type="approval_request",
        object_id=str(request.pk),
        before=before,
        after={"args_hash": request.args_hash, "decision": decision.pk, "reason": reason},
        trace_id=request.run.trace_id,
    )
    return decision


def _after_approval(request: ApprovalRequest, decision: Decision, *, outcome: str) -> Outcome:
    # Distinct people who approved exactly these arguments (an edit is its editor's
    # approval of the new ones), never the run's submitter: an approval given before an
    # edit raised the number of approvers, in a queue that lets submitters decide, does
    # not make them one of the two.
    approvals = request.decisions.filter(
        kind__in=[DecisionKind.APPROVE, DecisionKind.EDIT], args_hash=request.args_hash
    )
    if request.approvals_required > 1 and request.run.submitted_by_id is not None:
        approvals = approvals.exclude(decided_by_id=request.run.submitted_by_id)
    approvers = approvals.values("decided_by").distinct().count()
    if decision.kind == DecisionKind.EDIT:
        _file_candidate(request, decision)
    if approvers < request.approvals_required:
        queue_changed(queue_id=request.queue_id, request_id=request.pk, event="approved_once")
        return Outcome(request, decision, completed=False)
    _complete(request, RequestState.APPROVED, outcome=outcome, actor=decision.decided_by)
    return Outcome(request, decision, completed=True)


@_duty_audited(DecisionKind.REJECT)
def approval_reject(*, request_id: int, user: User, feedback: str) -> Outcome:
    """Reject with feedback; the agent receives the feedback as the tool's result.

    The feedback is redacted first: it is stored on the request and the decision, written
    to the audit log, filed with the correction and handed to the model.
    """
    feedback = redact_text(feedback.strip())
    if not feedback:
        raise DecisionRefused(
            "Say why: the feedback goes back to the agent.",
            field_errors={"feedback": ["This field is required."]},
        )
    with transaction.atomic():
        request = _locked_pending(request_id)
        _refuse_own_run(request, user)
        decision = _decision_create(
            request=request,
            kind=DecisionKind.REJECT,
            decided_by=user,
            args_hash=request.args_hash,
            reason=feedback[:FEEDBACK_MAX],
            from_queue=request.queue,
        )
        request.feedback = feedback[:FEEDBACK_MAX]
        audit_record(
            actor=user,
            verb="request.reject",
            object_type="approval_request",
            object_id=str(request.pk),
            after={"decision": decision.pk, "feedback": request.feedback},
            trace_id=request.run.trace_id,
        )
        if not request.is_run_escalation:
            _file_candidate(request, decision)
        _complete(request, RequestState.REJECTED, outcome="rejected", actor=user)
        return Outcome(request, decision, completed=True)


def approval_escalate(*, request_id: int, user: User, to_queue: Queue, reason: str) -> Outcome:
    """Move a pending request to another queue; its due time starts again there.

    A run's submitter may escalate its requests: that decides nothing, it hands the
    call to other people (``decider_barrier``).
    """
    with transaction.atomic():
        request = _locked_pending(request_id, deciding=False)
        if to_queue.pk == request.queue_id:
            raise DecisionRefused("The request is already in that queue.")
        if to_queue.tier < request.required_tier:
            # Authority never goes down: a senior's request cannot be handed to juniors.
            raise DecisionRefused(
                f"{to_queue.name} (tier {to_queue.tier}) is below what this request needs "
                f"(tier {request.required_tier}); escalate it to a queue of that tier or "
                "higher, or decide it here."
            )
        decision = _decision_create(
            request=request,
            kind=DecisionKind.ESCALATE,
            decided_by=user,
            args_hash=request.args_hash,
            reason=reason,
            from_queue=request.queue,
            to_queue=to_queue,
        )
        _move(request, to_queue, actor=user, reason=reason)
        return Outcome(request, decision, completed=False)


def _move(request: ApprovalRequest, to_queue: Queue, *, actor: User | None, reason: str) -> None:
    from_queue = request.queue
    request.queue = to_queue
    request.due_at = timezone.now() + timedelta(minutes=to_queue.sla_minutes)
    request.reminded_at = None
    request.claimed_by = None
    request.claimed_until = None
    request.save(update_fields=["queue", "due_at", "reminded_at", "claimed_by", "claimed_until"])
    audit_record(
        actor=actor,
        actor_label="" if actor else SLA,
        verb="request.escalated",
        object_type="approval_request",
        object_id=str(request.pk),
        before={"queue": from_queue.slug},
        after={"queue": to_queue.slug, "due_at": request.due_at.isoformat(), "reason": reason},
        trace_id=request.run.trace_id,
    )
    queue_changed(queue_id=from_queue.pk, request_id=request.pk, event="left")
    queue_changed(queue_id=to_queue.pk, request_id=request.pk, event="opened")


def _complete(
    request: ApprovalRequest, state: RequestState, *, outcome: str, actor: User | None
) -> None:
    """Close the request, write its outcome onto the call's action, and resume the run, once.

    The action carries what the resumed step needs (runs.kernel.approvals.action_decision_record):
    the runtime reads its own record, never this request.
    """
    request.state = state
    request.outcome = outcome
    request.decided_at = timezone.now()
    request.claimed_until = None
    request.save(update_fields=["state", "outcome", "feedback", "decided_at", "claimed_until"])
    if request.action_id is not None:
        action_decision_record(
            action_id=request.action_id,
            outcome=ReviewOutcome(outcome),
            decided_by=actor,
            decided_at=request.decided_at,
            arguments=request.arguments,
            args_hash=request.args_hash,
            feedback=request.feedback,
        )
    run = Run.objects.select_for_update().get(pk=request.run_id)
    waiting_in = (
        RunState.NEEDS_HUMAN if request.is_run_escalation else RunState.WAITING_FOR_APPROVAL
    )
    if run.state != waiting_in:
        # Cancelled (or otherwise ended) while the request waited: nothing to resume.
        log.info("run %s is %s; request %s closed without resuming", run.pk, run.state, request.pk)
    elif request.is_run_escalation and state != RequestState.APPROVED:
        _run_end_by_person(run, request, actor)
    else:
        run_resume(
            run,
            actor=actor,
            actor_label=SLA,
            restart=request.is_run_escalation,
            request=request.pk,
            outcome=outcome,
        )
        run.save()
    queue_changed(queue_id=request.queue_id, request_id=request.pk, event="decided")


def _run_end_by_person(run: Run, request: ApprovalRequest, actor: User | None) -> None:
    cause = run.error or {"class": "internal_error", "message": "the run needed a person"}
    who = actor.get_username() if actor else "the SLA clock"
    finish(
        run,
        RunState.FAILED,
        error={
            **cause,
            "message": f"{cause['message']} — ended by {who}: {request.feedback}"[:1000],
        },
        actor=actor,
        actor_label=SLA,
        request=request.pk,
    )
    run.save()


def _file_candidate(request: ApprovalRequest, decision: Decision) -> None:
    """An edit or a rejection is a correction: keep it as a golden-example candidate."""
    action = request.action
    assert action is not None, "a stuck run's request has no proposal to correct"
    proposed = action.arguments
    correction: dict[str, Any] = (
        {"kind": "edit", "arguments": request.arguments}
        if decision.kind == DecisionKind.EDIT
        else {"kind": "reject", "feedback": decision.reason}
    )
    candidate = GoldenCandidate(
        run=request.run,
        request=request,
        decision=decision,
        agent_name=request.agent_name,
        input=request.run.input,
        proposal={
            "tool": request.tool,
            "arguments": proposed,
            "rationale": action.rationale,
            "confidence": action.confidence,
        },
        correction=correction,
        reason=decision.reason,
    )
    # Everything here was redacted where it was written (the run's input, the action, the
    # decision); a candidate becomes eval data that outlives all of them, so once more.
    redact_row(candidate).save(force_insert=True)


# --- bulk ----------------------------------------------------------------------------------


class BulkRefused(DecisionRefused):
    pass


@_duty_audited(DecisionKind.APPROVE)
def approval_bulk_approve(
    *, request_ids: list[int], user: User, seen_hashes: dict[int, str]
) -> list[Outcome]:
    """Approve several low-risk requests of one tool under one rule, all or nothing.

    Refused when they mix tools or rules, when one is irreversible or needs more than one
    approver, or when one was decided or edited meanwhile.
    """
    if not request_ids:
        raise BulkRefused("Select at least one request.")
    with transaction.atomic():
        requests = list(
            ApprovalRequest.objects.select_for_update(of=("self", "run"))
            .select_related("queue", "run")
            .filter(pk__in=request_ids)
            .order_by("pk")
        )
        if len(requests) != len(set(request_ids)):
            raise BulkRefused("Some of the selected requests do not exist.")
        if len({(r.tool, r.rule) for r in requests}) != 1:
            raise BulkRefused("Bulk approval takes requests of one tool under one rule only.")
        for request in requests:
            if (
                request.is_run_escalation
                or request.risk == "irreversible"
                or request.approvals_required > 1
            ):
                raise BulkRefused(
                    "Bulk approval is for low-risk requests: irreversible calls and "
                    "two-person rules are decided one by one."
                )
            if not request.is_pending:
                raise AlreadyDecided(request)
            if seen_hashes.get(request.pk) != request.args_hash:
                raise BulkRefused(f"Request {request.pk} changed since you saw it.")
            _refuse_own_run(request, user)
        return [
            _after_approval(
                request,
                _add_approval(request, user, DecisionKind.APPROVE, None, "bulk approval"),
                outcome="approved",
            )
            for request in requests
        ]


# --- the SLA clock -------------------------------------------------------------------------


def approvals_expire_overdue(*, limit: int = 200) -> list[Decision]:
    """Escalate or decide requests past their due time; return the decisions it made.

    Safe on several beat hosts at once: each request is locked and re-checked, and a
    request another sweep (or a reviewer deciding right now) holds is skipped
    (``skip_locked``); the next sweep sees it again if it is still pending.
    """
    handled: list[Decision] = []
    now = timezone.now()
    ids = list(
        ApprovalRequest.objects.filter(state=RequestState.PENDING, due_at__lt=now)
        .order_by("due_at")
        .values_list("pk", flat=True)[:limit]
    )
    for request_id in ids:
        with transaction.atomic():
            request = (
                ApprovalRequest.objects.select_for_update(skip_locked=True, of=("self", "run"))
                .select_related("queue", "run", "queue__escalate_to")
                .filter(pk=request_id, state=RequestState.PENDING, due_at__lt=now)
                .first()
            )
            if request is None:
                continue
            handled.append(_expire(request))
    return handled


def _expire(request: ApprovalRequest) -> Decision:
    """Escalate an overdue request to its queue's next queue, or apply the expiry outcome.

    A queue it already passed through does not take it again: escalation chains that loop
    (A → B → A) end in the expiry outcome instead of circling forever.
    """
    queue = request.queue
    target = queue.escalate_to
    visited = set(
        request.decisions.filter(kind=DecisionKind.ESCALATE).values_list("from_queue", flat=True)
    )
    # In its first queue the request was due after the agent's SLA, if its version set one.
    minutes = (None if visited else _agent_sla_minutes(request.run)) or queue.sla_minutes
    reason = f"not decided within {minutes} minutes in {queue.name}"
    if target is not None and target.tier < request.required_tier:
        # A chain that leads down would lower the authority the request needs: it stays,
        # and takes its queue's expiry outcome.
        log.warning(
            "request %s: %s escalates to %s, below the tier it needs (%s); not moved",
            request.pk,
            queue.slug,
            target.slug,
            request.required_tier,
        )
        target = None
    if target is not None and target.pk not in visited:
        decision = _decision_create(
            request=request,
            kind=DecisionKind.ESCALATE,
            args_hash=request.args_hash,
            reason=reason,
            from_queue=queue,
            to_queue=target,
        )
        _move(request, target, actor=None, reason=reason)
        return decision
    approve = queue.expiry_outcome == ExpiryOutcome.APPROVE
    decision = _decision_create(
        request=request,
        kind=DecisionKind.EXPIRE,
        args_hash=request.args_hash,
        reason=reason,
        from_queue=queue,
    )
    if not approve:
        request.feedback = (
            f"No reviewer decided in time ({reason})."
            if request.is_run_escalation
            else f"No reviewer approved this call in time ({reason}). Do not retry it."
        )
    audit_record(
        actor=None,
        actor_label=SLA,
        verb="request.expired",
        object_type="approval_request",
        object_id=str(request.pk),
        after={"outcome": queue.expiry_outcome, "reason": reason},
        trace_id=request.run.trace_id,
    )
    _complete(
        request,
        RequestState.EXPIRED,
        outcome="expired_approved" if approve else "expired_rejected",
        actor=None,
    )
    return decision


def approval_is_granted(request: ApprovalRequest) -> bool:
    """Whether the worker may execute the request's arguments."""
    return request.state == RequestState.APPROVED or request.outcome == "expired_approved"
