"""A tool step: run one proposed tool call, at most once in effect, and record it.

Arguments are validated before anything runs, then the policy (policy.engine) gives
its verdict: execute, block, or review, which opens an approval request (through
runs.kernel.approvals: the runtime never imports the approvals side) and parks the run; after a
person decided, the step reads the outcome the decision wrote onto the action and runs the
approved arguments, or returns the reviewer's feedback. A validation failure, an unknown
tool, a block, a rejection, an open breaker or the tool's own ToolError go back to the
model as a structured tool result. A transient failure (timeout, crash) is retried with
backoff under the same idempotency key, so a tool that did its work before failing returns
its stored result.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone
from limits import storage, strategies
from pydantic import ValidationError

from agentdesk.errors import ErrorClass, error_payload
from agentdesk.redaction import redact_text, redact_value
from agentdesk.statements import select_row, update_row_if
from agents.definition import (
    Agent,
    Risk,
    Tool,
    ToolContext,
    ToolError,
    ToolFunction,
    parse_rate_limit,
)
from policy.engine import Decision as PolicyDecision
from policy.engine import Evidence, policy_evaluate
from policy.engine import Verdict as PolicyVerdict
from releases.configuration import config_for_run, config_policy_for_run
from runs.gateway.breakers import (
    CircuitOpen,
    breaker_allow,
    breaker_record_failure,
    breaker_record_success,
    tool_breaker_name,
)
from runs.gateway.retrying import retry_delay
from runs.kernel.approvals import CallReview, open_request
from runs.kernel.exposure import Exposure, exposure_facts, exposure_summed, subject_locked
from runs.kernel.limits import Spent, limit_reached
from runs.kernel.review_context import review_context_build
from runs.kernel.sandbox import sandbox_function, sandbox_withholds
from runs.kernel.stepping import (
    StepRecord,
    action_audit,
    args_hash,
    commit,
    conversation_state,
    defer,
    mark_degraded,
    release_db_connection,
)
from runs.kernel.transitions import park_for_approval, park_for_human
from runs.kernel.unit_of_work import StepWork
from runs.kernel.verification import call_verification, verification_failed
from runs.models import (
    GRANTED_OUTCOMES,
    Action,
    ActionStatus,
    Degradation,
    ReviewOutcome,
    Run,
    Step,
    StepKind,
    Verdict,
)

log = logging.getLogger("runs.services")

Result = tuple[dict[str, Any] | None, dict[str, Any] | None]
NOT_EXECUTED = frozenset(
    {
        ErrorClass.TOOL_UNKNOWN,
        ErrorClass.TOOL_ARGS_INVALID,
        ErrorClass.CIRCUIT_OPEN,
        ErrorClass.POLICY_BLOCKED,
        ErrorClass.REVIEW_REJECTED,
        ErrorClass.VERIFICATION_FAILED,
    }
)
# Calls refused before the policy saw them: their verdict is recorded as not evaluated.
REFUSED_BEFORE_POLICY = frozenset(
    {ErrorClass.TOOL_UNKNOWN, ErrorClass.TOOL_ARGS_INVALID, ErrorClass.VERIFICATION_FAILED}
)
ERROR_STATUS = {
    ErrorClass.POLICY_BLOCKED: ActionStatus.BLOCKED,
    ErrorClass.REVIEW_REJECTED: ActionStatus.REJECTED,
}

# Tool calls run on their own threads so that a timeout can be enforced. A timed-out call
# cannot be killed; it finishes in the background, and its effect is recorded under the
# action's key, which the retry then finds.
_executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="tool")


@cache
def _rate_limiter() -> strategies.MovingWindowRateLimiter:
    # Redis in production so the limit holds across workers and hosts; in the embedded
    # mode the count is per worker process, so a limit is only approximate there.
    backend = (
        storage.storage_from_string(settings.REDIS_URL)
        if settings.REDIS_URL
        else storage.MemoryStorage()
    )
    return strategies.MovingWindowRateLimiter(backend)


@dataclass
class _Gate:
    """What stands between a proposed call and its execution: validation and the policy."""

    validated: Any = None  # the arguments to run, validated (the approved ones after a review)
    error: dict[str, Any] | None = None  # refused before running: returned to the model
    verdict: PolicyDecision | None = None  # to record on the action; None after a review
    review: PolicyDecision | None = None  # the call must wait for a person
    evidence: Evidence | None = None  # what the policy read besides the arguments


def tool_step(run: Run, seq: int, agent: Agent, action_id: int) -> None:
    action = select_row(Action, id=action_id, run_id=run.pk)
    if action is None:
        raise Action.DoesNotExist(f"action {action_id} of run {run.pk}")
    tool = agent.tool(action.tool)
    gate = _gate(run, agent, tool, action)
    if gate.review is not None and run.is_sandbox:
        # No reviewer sees a sandboxed call: its verdict is recorded, and it goes on as if
        # approved as proposed (a write is answered by the sandbox, runs.kernel.sandbox).
        gate = _Gate(validated=gate.validated, verdict=gate.review, evidence=gate.evidence)
    if gate.review is not None:
        assert tool is not None
        _park_for_review(run, seq, agent, tool, action, gate)
        return
    if gate.error is None and tool is not None and tool.rate_limit:
        try:
            allowed = _rate_allows(tool)
        except Exception:  # the limiter's store (Redis) is down: wait, do not fail the run
            log.warning("rate limiter for %s unavailable; step deferred", tool.name)
            defer(run, seq, countdown_s=5, reason="rate limiter unavailable")
            return
        if not allowed:
            defer(run, seq, countdown_s=_rate_wait(tool), reason=f"{tool.name} rate limit")
            return
    attempt = run.checkpoint.get("attempt", 0) + 1
    record = _record_for(run, action, gate, attempt=attempt)
    started = time.perf_counter()
    if gate.error is not None or tool is None:
        result, error = None, gate.error
    else:
        result, error = _call(run, tool, action, gate.validated)
    record.latency_ms = round((time.perf_counter() - started) * 1000)
    delay = _settle_record(record, action, result, error, attempt=attempt)
    if delay is not None:
        _record_retry(run, seq, record, attempt, delay)
    else:
        handoff_error = _handoff_failed(run, tool, action, error)
        _record_result(run, seq, record, action, result, error, gate.verdict, agent, handoff_error)


@dataclass
class InlineCall:
    """A read-only call its model step made at once, to be recorded with that step."""

    action: Action
    record: StepRecord
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    verdict: PolicyDecision
    retry_in_s: float | None = None  # failed for now: a tool step tries again after this


def read_calls_inline(
    run: Run,
    agent: Agent,
    actions: list[Action],
    *,
    seq: int,
    spent: Spent,
    step_cost: Decimal,
    messages: list[dict[str, Any]],
) -> list[InlineCall]:
    """Make the leading calls of a model reply that only read, before the reply is recorded.

    A call to a tool of risk ``read`` has no effect to protect: no intent to record before
    it, nothing to repeat twice if its worker dies before the commit (the model step, and
    the read, are simply done again). So the model step makes such calls at once and
    records them with itself, each as its own tool step (seq + 1, seq + 2, ...): one
    transaction for the reply and its reads, where a tool step each took one more
    (docs/benchmarks.md). Flow 2 of the design, for the calls where it costs nothing.

    From the first call on, each call is made here if its tool is known, reads, has no
    rate limit, its arguments are valid, the policy says execute and the run's limits
    allow one more tool call; the first that does not qualify, and every call after it,
    goes to tool steps as before (writes, reviews, blocks, refusals, rate limits). A call
    that fails for now (a timeout, a crash) is recorded as a failed attempt, and its tool
    step tries again after the backoff, as it would have (``retry_in_s``).

    ``messages``: the conversation with the reply appended; ``spent``: the run's usage
    with this model step counted; ``step_cost``: this model step's cost.
    """
    limits = config_for_run(run=run, agent=agent).limits
    calls: list[InlineCall] = []
    for action in actions:
        tool = agent.tool(action.tool)
        if tool is None or tool.risk != Risk.READ or tool.rate_limit:
            break
        ran = sum(
            1 for call in calls if call.error is None or call.error["class"] not in NOT_EXECUTED
        )
        if limit_reached(
            spent.plus(steps=len(calls), tool_calls=ran), limits, about_to_call_tool=True
        ):
            break
        gate = _gate(
            run,
            agent,
            tool,
            action,
            run_facts={
                "steps": seq + 1 + len(calls),
                "tool_calls": run.tool_calls + ran,
                "cost_usd": float(run.cost_usd + step_cost),
            },
        )
        if gate.verdict is None or gate.verdict.verdict != PolicyVerdict.EXECUTE:
            break
        record = _record_for(run, action, gate, attempt=1, messages=messages)
        started = time.perf_counter()
        result, error = _call(run, tool, action, gate.validated, intent=False)
        record.latency_ms = round((time.perf_counter() - started) * 1000)
        call = InlineCall(action, record, result, error, gate.verdict)
        call.retry_in_s = _settle_record(record, action, result, error, attempt=1)
        calls.append(call)
        if call.retry_in_s is not None:
            break
        messages = [
            *messages,
            {"role": "tool", "content": _tool_content(tool_result(result, error))},
        ]
    return calls


def _settle_record(
    record: StepRecord,
    action: Action,
    result: dict[str, Any] | None,
    error: dict[str, Any] | None,
    *,
    attempt: int,
) -> float | None:
    """Put a call's outcome on its step record and log it; seconds until a retry, or None."""
    if error is None:
        record.outcome = {"result": result}
        log.info("tool %s succeeded", action.tool)
        return None
    record.failed(error)
    delay = retry_delay(attempt=attempt, error_class=error["class"])
    log.info(
        "tool %s failed: %s%s",
        action.tool,
        error["class"],
        f", retry in {delay:.1f} s" if delay is not None else "",
    )
    return delay


def _record_for(
    run: Run,
    action: Action,
    gate: _Gate,
    *,
    attempt: int,
    messages: list[dict[str, Any]] | None = None,
) -> StepRecord:
    if gate.validated is not None:
        arguments: Any = json.loads(gate.validated.model_dump_json())
    else:
        arguments = action.arguments if action.arguments is not None else action.raw_arguments
    return StepRecord(
        kind=StepKind.TOOL,
        state=(
            conversation_state(run.checkpoint["messages"])
            if messages is None
            else conversation_state(messages, fresh=True)
        ),
        started_at=timezone.now(),
        action={
            "tool": action.tool,
            "arguments": arguments,
            "idempotency_key": action.idempotency_key,
        },
        reason=action.rationale,
        confidence=action.confidence,
        prompt_version=run.prompt_version,
        attempt=attempt,
    )


def _gate(
    run: Run,
    agent: Agent,
    tool: Tool | None,
    action: Action,
    *,
    run_facts: dict[str, Any] | None = None,
) -> _Gate:
    """Validate the call, then ask the policy, or read the decision a person already made.

    ``run_facts``: what the policy is told of the run, when not the run as it is stored
    (a call made within its model step, which is not recorded yet).
    """
    if tool is None:
        known = ", ".join(t.name for t in agent.tools)
        return _Gate(
            error=error_payload(
                ErrorClass.TOOL_UNKNOWN, f"there is no tool named {action.tool!r}; tools: {known}"
            )
        )
    if action.arguments is None:
        return _Gate(
            error=error_payload(
                ErrorClass.TOOL_ARGS_INVALID,
                "the arguments are not a JSON object",
                raw=action.raw_arguments[:500],
            )
        )
    try:
        validated = tool.input_schema.model_validate(action.arguments)
    except ValidationError as exc:
        return _Gate(
            error=error_payload(
                ErrorClass.TOOL_ARGS_INVALID,
                f"the arguments do not match the {tool.name} schema",
                errors=json.loads(exc.json(include_url=False, include_context=False)),
            )
        )
    # Only a call the policy sent to review has a decision to read; its decision wrote the
    # outcome onto the action (runs.kernel.approvals.action_decision_record).
    if action.verdict == PolicyVerdict.REVIEW and action.review_outcome:
        return _reviewed(tool, action)
    # The agent's verifiers, before the policy: a call they refuse never reaches it (nor a
    # reviewer's queue), and goes back to the model with their reasons. Only a call not
    # yet started: one marked executing may have had its effect (a crash, a timeout), so
    # the data it is checked against has moved, and its redo must replay, not be refused.
    if action.status == ActionStatus.PROPOSED:
        refused = call_verification(run, agent, action, json.loads(validated.model_dump_json()))
        if refused is not None:
            return _Gate(error=refused)
    verdict, evidence = _judge(run, agent, tool, action, validated, run_facts=run_facts)
    if verdict.verdict == PolicyVerdict.BLOCK:
        return _Gate(
            verdict=verdict,
            error=error_payload(
                ErrorClass.POLICY_BLOCKED,
                f"{verdict.reason}; this call was not made. Do not call {tool.name} again.",
                rule=verdict.rule,
            ),
        )
    if verdict.verdict == PolicyVerdict.REVIEW:
        return _Gate(validated=validated, verdict=verdict, review=verdict, evidence=evidence)
    return _Gate(validated=validated, verdict=verdict, evidence=evidence)


def _judge(
    run: Run,
    agent: Agent,
    tool: Tool,
    action: Action,
    validated: Any,
    *,
    run_facts: dict[str, Any] | None,
) -> tuple[PolicyDecision, Evidence]:
    """The policy's verdict on a call, with the evidence it read (runs.kernel.exposure).

    A call that moves money is judged under its subject's lock, and its exposure and
    verdict are recorded on its action before the lock is let go, so the next call of the
    same customer counts it. (A call made within its model step has no row yet: it only
    reads, and moves no money.)
    """
    policy = config_policy_for_run(run=run, agent=agent)
    arguments = validated.model_dump()
    exposure = exposure_facts(
        agent=agent, tool_name=tool.name, arguments=arguments, run_input=run.input
    )

    def verdict_on(exposure: Exposure) -> PolicyDecision:
        return policy_evaluate(
            policy=policy,
            tool_name=tool.name,
            risk=tool.risk,
            arguments=arguments,
            confidence=action.confidence,
            run_input=run.input,
            run_facts=run_facts
            or {
                "steps": run.next_seq,
                "tool_calls": run.tool_calls,
                "cost_usd": float(run.cost_usd),
            },
            evidence=exposure.evidence,
        )

    if not exposure.moves_money or run_facts is not None:
        return verdict_on(exposure), exposure.evidence
    with transaction.atomic():
        subject_locked(exposure.evidence.subject)
        exposure = exposure_summed(exposure, policy=policy, run_id=run.pk, exclude_action=action.pk)
        verdict = verdict_on(exposure)
        recorded = exposure.action_fields()
        if run.is_sandbox:
            # Counted within its own run only: a subject's sums are of live money.
            recorded.update(subject="", record="")
        for name, value in {**recorded, **_verdict_fields(verdict)}.items():
            setattr(action, name, value)
        update_row_if(action, [*recorded, *_verdict_fields(verdict)], id=action.pk)
    return verdict, exposure.evidence


def _reviewed(tool: Tool, action: Action) -> _Gate:
    """After a person decided: the approved arguments, exactly as approved, or the feedback."""
    if action.review_outcome in GRANTED_OUTCOMES:
        # The hash check is the last line of defence: run only what the approval covered.
        approved = action.approved_arguments
        if approved is None or args_hash(tool.name, approved, "") != action.approved_args_hash:
            raise RuntimeError(f"action {action.pk}: the arguments do not match their hash")
        return _Gate(validated=tool.input_schema.model_validate(approved))
    feedback = action.review_feedback
    if action.review_outcome == ReviewOutcome.EXPIRED_REJECTED:
        message = feedback  # no person acted: say so, not "a reviewer rejected"
    else:
        message = f"A reviewer rejected this call. Their feedback: {feedback}"
    return _Gate(error=error_payload(ErrorClass.REVIEW_REJECTED, message, feedback=feedback))


def _park_for_review(
    run: Run, seq: int, agent: Agent, tool: Tool, action: Action, gate: _Gate
) -> None:
    """Open an approval request and park the run; the task ends here (nothing waits)."""
    review = gate.review
    assert review is not None
    arguments = json.loads(gate.validated.model_dump_json())
    context = review_context_build(run=run, agent=agent, tool=tool, arguments=arguments)
    if gate.evidence is not None:
        # The facts and sums the verdict read, as the reviewer should see them.
        context["evidence"] = gate.evidence.as_json()
    record = _record_for(run, action, gate, attempt=1)
    record.outcome = {
        "review": {"queue": review.queue, "rule": review.rule, "reason": review.reason}
    }

    def apply(locked: Run, work: StepWork) -> None:
        work.add_step(record, seq)
        work.update_action(action, _verdict_set(action, review))
        request = open_request(
            CallReview(
                run=locked,
                action=action,
                agent=agent,
                tool=tool,
                arguments=arguments,
                verdict=review,
                context=context,
            )
        )
        park_for_approval(locked, request=request)
        locked.checkpoint["attempt"] = 0

    commit(run, seq, apply)
    log.info("tool %s sent to review in %s: %s", tool.name, review.queue, review.reason)


def _verdict_fields(verdict: PolicyDecision) -> dict[str, Any]:
    return {
        "verdict": str(verdict.verdict),
        # A rule's reason can quote the arguments; the same few reasons recur (remembered).
        "verdict_reason": redact_text(verdict.reason)[:500],
        "policy_rule": verdict.rule,
        "policy_version": verdict.policy_version,
    }


def _verdict_set(action: Action, verdict: PolicyDecision) -> list[str]:
    """Set the policy's verdict on ``action``; returns the fields set, for its update."""
    fields = _verdict_fields(verdict)
    for name, value in fields.items():
        setattr(action, name, value)
    return list(fields)


def _rate_key(tool: Tool) -> tuple[str, ...]:
    # Installations sharing one Redis (AGENTDESK_CELERY_QUEUE tells them apart) keep
    # separate counts.
    return (settings.AGENTDESK_CELERY_QUEUE, "tool", tool.name)


def _rate_allows(tool: Tool) -> bool:
    assert tool.rate_limit is not None
    return _rate_limiter().hit(parse_rate_limit(tool.rate_limit), *_rate_key(tool))


def _rate_wait(tool: Tool) -> float:
    assert tool.rate_limit is not None
    stats = _rate_limiter().get_window_stats(parse_rate_limit(tool.rate_limit), *_rate_key(tool))
    return max(stats.reset_time - time.time(), 0.1)


def _record_retry(run: Run, seq: int, record: StepRecord, attempt: int, delay: float) -> None:
    def apply(locked: Run, work: StepWork) -> None:
        work.add_step(record, seq)
        locked.checkpoint["attempt"] = attempt
        mark_degraded(locked, Degradation.RETRIED)

    commit(run, seq, apply, countdown_s=delay)


def _record_result(
    run: Run,
    seq: int,
    record: StepRecord,
    action: Action,
    result: dict[str, Any] | None,
    error: dict[str, Any] | None,
    verdict: PolicyDecision | None,
    agent: Agent,
    handoff_error: dict[str, Any] | None,
) -> None:
    def apply(locked: Run, work: StepWork) -> None:
        step = work.add_step(record, seq)
        before = action.status
        work.update_action(action, settle_action(action, step, result, error, verdict))
        account_result(locked, action, seq, error, verdict, before=before)
        locked.checkpoint["pending_actions"] = [
            pk for pk in locked.checkpoint.get("pending_actions", []) if pk != action.pk
        ]
        if error is not None and error["class"] == ErrorClass.CIRCUIT_OPEN:
            mark_degraded(locked, Degradation.BREAKER_OPEN)
        if handoff_error is not None:
            mark_degraded(locked, Degradation.HANDOFF_FAILED)
            park_for_human(locked, handoff_error)
        elif error is not None and error["class"] == ErrorClass.VERIFICATION_FAILED:
            verification_failed(locked, agent, error)

    commit(run, seq, apply)


def _handoff_failed(
    run: Run, tool: Tool | None, action: Action, error: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The error that takes the run to a person when a hand-off could not be filed; or None.

    A call of a tool that ``reaches_person`` is how the agent gives a case to a person;
    when it fails, nobody has the case. So the run is parked in the escalation queue with
    the hand-off's arguments, unless a person already said no to it (a rejected review),
    or it is the model's first hand-off with invalid arguments, which it may repair once.
    """
    if tool is None or not tool.reaches_person or error is None:
        return None
    if error["class"] == ErrorClass.REVIEW_REJECTED:
        return None
    if error["class"] == ErrorClass.TOOL_ARGS_INVALID:
        earlier = Action.objects.filter(
            run=run, tool=tool.name, status=ActionStatus.FAILED
        ).exclude(pk=action.pk)
        if not earlier.exists():
            return None
    return error_payload(
        ErrorClass.HANDOFF_FAILED,
        f"the hand-off ({tool.name}) could not be filed: {error['message']}; "
        "a person must take the case"[:1000],
        error=error,
        arguments=redact_value(action.arguments),
    )


def tool_result(result: dict[str, Any] | None, error: dict[str, Any] | None) -> Any:
    """What a call returned, as stored on its action and shown to the model."""
    return {"error": error} if error is not None else result


def _tool_content(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder)


def settle_action(
    action: Action,
    step: Step,
    result: dict[str, Any] | None,
    error: dict[str, Any] | None,
    verdict: PolicyDecision | None,
) -> dict[str, Any]:
    """How a call ended, set on ``action``; returns the fields set, for an UPDATE."""
    status = ActionStatus.SUCCEEDED
    if error is not None:
        status = ERROR_STATUS.get(error["class"], ActionStatus.FAILED)
    # What the step recorded, which it redacted (StepRecord.build): a tool's result can hold
    # a customer's card or a key, and the action's copy is shown to reviewers, fed back to
    # the model and filed with corrections. Taken from the step rather than redacted again:
    # the result is the largest value of a tool step.
    recorded = step.outcome
    fields = {
        "status": status,
        "result": tool_result(
            recorded.get("result"), recorded["error"] if error is not None else None
        ),
        "error_class": error["class"] if error else "",
        "step": step,
        "executed_at": timezone.now(),
        **(_verdict_fields(verdict) if verdict is not None else {}),
    }
    if verdict is None and error is not None and error["class"] in REFUSED_BEFORE_POLICY:
        # Said outright rather than left to the field's default: this call never reached
        # the policy, and why.
        fields.update(
            verdict=Verdict.NOT_EVALUATED,
            verdict_reason=error["message"][:500],
            policy_rule="",
            policy_version="",
        )
    for name, value in fields.items():
        setattr(action, name, value)
    return fields


def account_result(
    locked: Run,
    action: Action,
    seq: int,
    error: dict[str, Any] | None,
    verdict: PolicyDecision | None,
    *,
    before: str,
) -> None:
    """A settled call's audit event, its tool message to the model, and its count."""
    ran = error is None or error["class"] not in NOT_EXECUTED
    action_audit(
        action,
        trace_id=locked.trace_id,
        before=ActionStatus.EXECUTING if ran else before,
        step=seq,
        error_class=error["class"] if error else "",
        **({"verdict": str(verdict.verdict), "policy_rule": verdict.rule} if verdict else {}),
    )
    checkpoint = locked.checkpoint
    checkpoint["attempt"] = 0
    checkpoint["messages"].append(
        {
            "role": "tool",
            "tool_call_id": action.tool_call_id,
            "content": _tool_content(action.result),
        }
    )
    # The limit counts calls that reached the tool, not ones refused before it ran.
    if ran:
        locked.tool_calls += 1


def _call(run: Run, tool: Tool, action: Action, validated: Any, *, intent: bool = True) -> Result:
    """Run one validated, permitted call behind its breaker; return (result, error)."""
    if sandbox_withholds(run, tool):
        # Answered without its effect, and without its breaker: the tool is not called.
        return _execute(run, tool, action, validated, intent=intent, func=sandbox_function(tool))
    breaker = tool_breaker_name(tool.name)
    try:
        clean = breaker_allow(name=breaker)
    except CircuitOpen as exc:
        return None, error_payload(
            ErrorClass.CIRCUIT_OPEN,
            f"{tool.name} is failing and temporarily switched off; do not call it again now",
            retry_at=exc.retry_at.isoformat() if exc.retry_at else None,
        )
    result, error = _execute(run, tool, action, validated, intent=intent)
    if error is not None and error["class"] in (ErrorClass.TOOL_TIMEOUT, ErrorClass.TOOL_CRASHED):
        breaker_record_failure(name=breaker, error_class=error["class"])
    else:  # a ToolError is the tool working as meant
        breaker_record_success(name=breaker, was_clean=clean)
    return result, error


def _execute(
    run: Run,
    tool: Tool,
    action: Action,
    validated: Any,
    *,
    intent: bool,
    func: ToolFunction | None = None,
) -> Result:
    func = func or tool.func
    if intent:
        # Record the intent before the effect: an action left EXECUTING after a crash shows
        # that the effect may have happened, and the redo runs under the same key. (A call
        # that only reads, made within its model step, has no effect and no row yet.)
        # (On a retry the row says EXECUTING already and stays so; so does ``action``.)
        action.status = ActionStatus.EXECUTING
        update_row_if(action, ["status"], id=action.pk, status=ActionStatus.PROPOSED)
    context = ToolContext(
        run_id=str(run.id),
        trace_id=run.trace_id,
        idempotency_key=action.idempotency_key,
        input=run.input,
    )
    try:
        if connection.in_atomic_block:
            # The caller's transaction must see the tool's writes and the tool the caller's
            # (only tests drive steps inside a transaction): run inline, without a timeout.
            result = func(validated, context)
        else:
            # The tool's thread takes a connection of its own: give this one back while
            # waiting, or callers holding every connection of the pool would starve the
            # very tools they wait for, and each would time out.
            release_db_connection()
            # copy_context: the tool's log lines carry the run's trace id too.
            result = _executor.submit(
                contextvars.copy_context().run, _run_tool, func, validated, context
            ).result(timeout=tool.timeout_s)
    except FutureTimeout:
        return None, error_payload(
            ErrorClass.TOOL_TIMEOUT, f"{tool.name} did not answer within {tool.timeout_s} s"
        )
    except ToolError as exc:
        return None, _as_json(
            error_payload(ErrorClass.TOOL_ERROR, exc.message, code=exc.code, **exc.details)
        )
    except Exception as exc:  # a bug or an outage in the tool: the worker survives
        log.exception("tool %s crashed", tool.name)
        return None, error_payload(
            ErrorClass.TOOL_CRASHED, f"{tool.name} failed unexpectedly ({type(exc).__name__})"
        )
    try:
        return _as_json(result), None
    except (TypeError, ValueError) as exc:
        log.error("tool %s returned a result JSON cannot hold: %s", tool.name, exc)
        return None, error_payload(
            ErrorClass.TOOL_CRASHED, f"{tool.name} returned a result that is not JSON"
        )


def _as_json(value: Any) -> Any:
    """The value as stored and shown to the model: plain JSON (Decimals become strings)."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def _run_tool(func: ToolFunction, validated: Any, context: ToolContext) -> Any:
    try:
        return func(validated, context)
    finally:
        connection.close()  # this thread's own connection, back to the pool
