"""Deciding a request: approve, edit, reject or escalate, and what each decision writes.

Every decision locks the request and its run (``_locked_pending``) before it changes
anything, and writes its audit event in the same transaction. A decision that completes
a request writes its outcome onto the call's action and resumes the run, once
(``_complete``); the SLA clock (reviews.services.expiry) closes requests the same way.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone
from pydantic import ValidationError

from agentdesk.redaction import redact_row, redact_text, redact_value
from agents.definition import Tool
from agents.registry import UnknownAgent, agent_get
from audit.log import audit_record
from audit.models import AuditVerb
from policy.engine import Decision as PolicyDecision
from policy.engine import Verdict, policy_evaluate
from releases.configuration import config_policy_for_run
from reviews.broadcast import queue_changed
from reviews.models import (
    ApprovalRequest,
    Decision,
    DecisionKind,
    GoldenCandidate,
    Queue,
    RequestOutcome,
    RequestState,
)
from reviews.services.opening import request_hash
from reviews.services.refusals import (
    AlreadyDecided,
    DecisionRefused,
    DutyRefused,
    _duty_audited,
    _refuse_own_run,
)
from runs.kernel.approvals import action_decision_record
from runs.kernel.exposure import exposure_facts, exposure_summed, subject_locked
from runs.kernel.transitions import finish, run_resume
from runs.models import Action, ReviewOutcome, Run, RunState

log = logging.getLogger(__name__)

FEEDBACK_MAX = 2000
SLA = "sla"  # the actor label of what the SLA clock does on its own


@dataclass(frozen=True)
class Outcome:
    request: ApprovalRequest
    decision: Decision
    completed: bool  # the request is decided (not waiting for more approvers)


def shown_arguments(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    """Validated arguments as JSON, the form a reviewer sees and an approval hashes."""
    validated = tool.input_schema.model_validate(arguments)
    shown: dict[str, Any] = json.loads(validated.model_dump_json())
    return shown


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
        return _after_approval(request, decision, outcome=RequestOutcome.APPROVED)


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
        return _after_approval(request, decision, outcome=RequestOutcome.EDITED)


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
        verb=AuditVerb(f"request.{kind}"),
        object_type="approval_request",
        object_id=str(request.pk),
        before=before,
        after={"args_hash": request.args_hash, "decision": decision.pk, "reason": reason},
        trace_id=request.run.trace_id,
    )
    return decision


def _after_approval(
    request: ApprovalRequest, decision: Decision, *, outcome: RequestOutcome
) -> Outcome:
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
            verb=AuditVerb.REQUEST_REJECT,
            object_type="approval_request",
            object_id=str(request.pk),
            after={"decision": decision.pk, "feedback": request.feedback},
            trace_id=request.run.trace_id,
        )
        if not request.is_run_escalation:
            _file_candidate(request, decision)
        _complete(request, RequestState.REJECTED, outcome=RequestOutcome.REJECTED, actor=user)
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
        verb=AuditVerb.REQUEST_ESCALATED,
        object_type="approval_request",
        object_id=str(request.pk),
        before={"queue": from_queue.slug},
        after={"queue": to_queue.slug, "due_at": request.due_at.isoformat(), "reason": reason},
        trace_id=request.run.trace_id,
    )
    queue_changed(queue_id=from_queue.pk, request_id=request.pk, event="left")
    queue_changed(queue_id=to_queue.pk, request_id=request.pk, event="opened")


def _complete(
    request: ApprovalRequest, state: RequestState, *, outcome: RequestOutcome, actor: User | None
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
    """A correction, kept as a golden-example candidate for curators.

    A person's edit (the edited arguments) or rejection (the feedback); or the SLA's
    default when nobody decided in time (``decision`` an expiry): the arguments as they
    ran, or the refusal the model was told, marked ``expired`` so a curator knows no
    person chose it.
    """
    action = request.action
    assert action is not None, "a stuck run's request has no proposal to correct"
    proposed = action.arguments
    correction: dict[str, Any]
    if decision.kind == DecisionKind.EXPIRE:
        correction = (
            {"kind": "edit", "arguments": request.arguments, "expired": True}
            if request.outcome == RequestOutcome.EXPIRED_APPROVED
            else {"kind": "reject", "feedback": request.feedback, "expired": True}
        )
    elif decision.kind == DecisionKind.EDIT:
        correction = {"kind": "edit", "arguments": request.arguments}
    else:
        correction = {"kind": "reject", "feedback": decision.reason}
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
        # The run is parked on this request: its checkpoint holds the conversation up to
        # the corrected call, what a step example replays.
        messages=list((request.run.checkpoint or {}).get("messages", [])),
        reason=decision.reason,
    )
    # Everything here was redacted where it was written (the run's input, the action, the
    # decision); a candidate becomes eval data that outlives all of them, so once more.
    redact_row(candidate).save(force_insert=True)
