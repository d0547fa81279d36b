"""The runtime: submit a run, execute its steps, recover stalled runs.

A run advances one step at a time, each step in its own Celery task:

1. Claim: lock the run row, check that the task's step number is the run's next one and
   that no live lease is held, then take a lease and commit. A redelivered or duplicated
   task fails this check and does nothing.
2. Work, outside any transaction: one model call or one tool call. Nothing holds a
   database connection busy while the model thinks.
3. Commit: lock the run again, check the lease is still ours, record the step and the new
   checkpoint, advance ``next_seq`` and enqueue the next step on commit. ``(run, seq)`` is
   unique, so a step can never be recorded twice.

A worker killed between 1 and 3 leaves an expired lease; ``runs_recover_stalled`` (on a
beat schedule) re-enqueues such runs, and the step is redone. Model calls have no side
effects; tool calls carry the action's idempotency key, which the tool's backend enforces
with a unique constraint, so a redone tool call returns the stored result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from pydantic import ValidationError

from agentdesk.agents import (
    CONFIDENCE_FIELD,
    RATIONALE_FIELD,
    Agent,
    Tool,
    ToolContext,
    ToolError,
)
from agentdesk.audit import audit_record
from agentdesk.errors import ErrorClass, error_payload
from agentdesk.logging import trace_context
from agentdesk.registry import UnknownAgent, agent_get
from runs.gateway import ModelCallFailed, ModelReply, model_complete
from runs.models import (
    ACTIVE_STATES,
    Action,
    ActionStatus,
    Run,
    RunState,
    Step,
    StepKind,
    StepStatus,
)
from runs.pricing import model_call_cost

log = logging.getLogger(__name__)

WORKER = "worker"  # the actor label of changes the runtime makes on its own
# A step whose worker died this many times is not tried again: the run fails with an
# internal_error instead of crashing workers forever.
MAX_STEP_ATTEMPTS = 3


# --- submitting ----------------------------------------------------------------------------


class RunInputInvalid(Exception):
    """The submission was refused; nothing was created."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different request."""


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)


def _request_hash(agent_name: str, run_input: Any) -> str:
    return hashlib.sha256(_canonical_json([agent_name, run_input]).encode()).hexdigest()


def run_submit(
    *,
    agent_name: str,
    run_input: Any,
    submitted_by: AbstractBaseUser | AnonymousUser | None = None,
    idempotency_key: str | None = None,
) -> tuple[Run, bool]:
    """Validate and queue a run; return it and whether it was created.

    With an idempotency key, a repeated submission returns the run the key created first,
    provided the request is the same; a different request under the same key is refused.
    Raises RunInputInvalid (nothing created) or IdempotencyConflict.
    """
    try:
        agent = agent_get(agent_name)
    except UnknownAgent as exc:
        raise RunInputInvalid(str(exc)) from None
    if not isinstance(run_input, dict):
        raise RunInputInvalid("input must be a JSON object")
    size = len(_canonical_json(run_input).encode())
    if size > settings.AGENTDESK_MAX_INPUT_BYTES:
        raise RunInputInvalid(
            f"input is {size} bytes; the limit is {settings.AGENTDESK_MAX_INPUT_BYTES} bytes"
        )
    try:
        validated = agent.input_schema.model_validate(run_input)
    except ValidationError as exc:
        raise RunInputInvalid(
            f"input does not match the {agent.name!r} agent's input schema",
            details=json.loads(exc.json(include_url=False, include_context=False)),
        ) from None
    if idempotency_key is not None and not (1 <= len(idempotency_key) <= 200):
        raise RunInputInvalid("the idempotency key must be 1 to 200 characters")

    user = submitted_by if submitted_by is not None and submitted_by.is_authenticated else None
    request_hash = _request_hash(agent.name, run_input)
    if idempotency_key is not None:
        existing = _run_for_key(user, idempotency_key, request_hash)
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
            run = _run_create(agent, validated, run_input, user, idempotency_key, request_hash)
    except IntegrityError:
        # Two submissions with the same key raced; the other one won.
        existing = _run_for_key(user, idempotency_key, request_hash) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    return run, True


def _run_for_key(user: Any, key: str, request_hash: str) -> Run | None:
    existing = Run.objects.filter(submitted_by=user, idempotency_key=key).first()
    if existing is not None and existing.request_hash != request_hash:
        raise IdempotencyConflict(
            f"the idempotency key {key!r} was already used for a different request "
            f"(run {existing.id})"
        )
    return existing


def _run_create(
    agent: Agent,
    validated: Any,
    run_input: dict[str, Any],
    user: Any,
    idempotency_key: str | None,
    request_hash: str,
) -> Run:
    messages = [
        {"role": "system", "content": agent.render_system_prompt(validated)},
        {"role": "user", "content": agent.render_input(validated)},
    ]
    run = Run.objects.create(
        agent_name=agent.name,
        input=run_input,
        trace_id=uuid.uuid4().hex,
        prompt_version=agent.prompt_version,
        model=agent.model,
        checkpoint={"messages": messages, "pending_actions": []},
        submitted_by=user,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    audit_record(
        actor=user,
        verb="run.submitted",
        object_type="run",
        object_id=str(run.id),
        after={"state": run.state, "agent": agent.name, "prompt_version": run.prompt_version},
        trace_id=run.trace_id,
    )
    _enqueue_next_step(run)
    run.save(update_fields=["enqueued_at"])
    with trace_context(run.trace_id):
        log.info("run %s submitted for agent %s", run.id, agent.name)
    return run


def _enqueue_next_step(run: Run) -> None:
    """Put the run's next step on the broker once the current transaction commits.

    ``robust``: a broker that is down must not undo a committed step; the stalled-run
    sweeper enqueues it again later. The caller saves ``enqueued_at``.
    """
    run_id, seq = str(run.id), run.next_seq
    run.enqueued_at = timezone.now()

    def send() -> None:
        from runs.tasks import run_step

        run_step.delay(run_id, seq)

    transaction.on_commit(send, robust=True)


# --- stepping ------------------------------------------------------------------------------


def run_step_execute(*, run_id: str, seq: int) -> None:
    """Execute step ``seq`` of a run, if it is still the run's next step."""
    run = _claim(run_id, seq)
    if run is None:
        return
    assert run.lease_token is not None
    with trace_context(run.trace_id):
        agent = agent_get(run.agent_name)
        pending = run.checkpoint.get("pending_actions", [])
        if run.step_attempts > MAX_STEP_ATTEMPTS:
            crashed = error_payload(
                ErrorClass.INTERNAL_ERROR,
                f"step {seq} was started {run.step_attempts - 1} times and never finished; "
                "see the worker logs for this trace id",
            )
            _commit(run, seq, lambda r: _fail(r, crashed))
        elif exceeded := _limit_exceeded(run, agent, about_to_call_tool=bool(pending)):
            _commit(run, seq, lambda r: _fail(r, exceeded))
        elif pending:
            _tool_step(run, seq, agent, pending[0])
        else:
            _model_step(run, seq, agent)


def _claim(run_id: str, seq: int) -> Run | None:
    now = timezone.now()
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            log.warning("step task for unknown run %s ignored", run_id)
            return None
        if run.state not in ACTIVE_STATES or run.next_seq != seq:
            log.info(
                "stale step task %s/%s ignored (run at %s, %s)",
                run_id,
                seq,
                run.next_seq,
                run.state,
            )
            return None
        if run.lease_token is not None and run.lease_expires_at and run.lease_expires_at > now:
            log.info("step %s/%s is held by another worker; ignored", run_id, seq)
            return None
        run.lease_token = uuid.uuid4()
        run.lease_expires_at = now + timedelta(seconds=settings.AGENTDESK_STEP_LEASE_S)
        run.step_attempts += 1
        fields = ["lease_token", "lease_expires_at", "step_attempts", "updated_at"]
        if run.state == RunState.QUEUED:
            run.state = RunState.RUNNING
            run.started_at = now
            fields += ["state", "started_at"]
            audit_record(
                actor=None,
                actor_label=WORKER,
                verb="run.started",
                object_type="run",
                object_id=str(run.id),
                before={"state": RunState.QUEUED},
                after={"state": RunState.RUNNING},
                trace_id=run.trace_id,
            )
        run.save(update_fields=fields)
    return run


def _commit(run: Run, seq: int, apply: Callable[[Run], None]) -> bool:
    """Record a step's results if our lease still holds; enqueue the next step.

    ``apply`` receives the freshly locked run and records the step on it. Returns False
    (and records nothing) when the lease was lost: another worker took the run over after
    ours expired, and its result is the one that counts.
    """
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.lease_token != run.lease_token or locked.next_seq != seq:
            log.warning("lease on step %s lost; its result is discarded", seq)
            return False
        apply(locked)
        locked.next_seq = seq + 1
        locked.step_attempts = 0
        locked.lease_token = None
        locked.lease_expires_at = None
        if locked.state in ACTIVE_STATES:
            _enqueue_next_step(locked)
        locked.save()
    return True


def _limit_exceeded(run: Run, agent: Agent, *, about_to_call_tool: bool) -> dict[str, Any] | None:
    limits = agent.limits
    reason: str | None = None
    if run.next_seq >= limits.max_steps:
        reason = f"the run reached its limit of {limits.max_steps} steps"
    elif about_to_call_tool and run.tool_calls >= limits.max_tool_calls:
        reason = f"the run reached its limit of {limits.max_tool_calls} tool calls"
    elif run.tokens_in + run.tokens_out >= limits.max_tokens:
        reason = f"the run used {run.tokens_in + run.tokens_out} tokens of {limits.max_tokens}"
    elif run.cost_usd >= limits.max_cost_usd:
        reason = f"the run cost ${run.cost_usd} of its ${limits.max_cost_usd} budget"
    elif run.started_at and timezone.now() - run.started_at > timedelta(seconds=limits.deadline_s):
        reason = f"the run passed its deadline of {limits.deadline_s} s"
    return error_payload(ErrorClass.BUDGET_EXCEEDED, reason) if reason else None


def _fail(run: Run, error: dict[str, Any]) -> None:
    _finish(run, RunState.FAILED, error=error)


def _finish(
    run: Run, state: RunState, *, output: str = "", error: dict[str, Any] | None = None
) -> None:
    before = run.state
    run.state = state
    run.output = output
    run.error = error
    run.finished_at = timezone.now()
    audit_record(
        actor=None,
        actor_label=WORKER,
        verb=f"run.{state}",
        object_type="run",
        object_id=str(run.id),
        before={"state": before},
        after={"state": state, "error": error},
        trace_id=run.trace_id,
    )
    log.info("run %s %s%s", run.id, state, f": {error['class']}" if error else "")


def _conversation_state(messages: list[dict[str, Any]]) -> dict[str, Any]:
    last = messages[-1] if messages else {}
    content = last.get("content") or ""
    return {
        "messages": len(messages),
        "last_role": last.get("role", ""),
        "last_content": content[:500],
    }


@dataclass
class _StepRecord:
    """The fields of a Step, gathered while the work runs outside the transaction."""

    kind: StepKind
    state: dict[str, Any]
    started_at: Any
    action: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    confidence: float | None = None
    outcome: dict[str, Any] = field(default_factory=dict)
    status: StepStatus = StepStatus.OK
    error_class: str = ""
    latency_ms: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: Decimal | None = None
    model: str = ""
    prompt_version: str = ""

    def create(self, run: Run, seq: int) -> Step:
        return Step.objects.create(
            run=run,
            seq=seq,
            attempt=run.step_attempts,
            finished_at=timezone.now(),
            **{name: getattr(self, name) for name in self.__dataclass_fields__},
        )


# --- model steps -----------------------------------------------------------------------------


def _parse_arguments(raw: str) -> tuple[dict[str, Any] | None, str, float | None]:
    """Split a tool call's argument string into (arguments, rationale, confidence).

    Arguments are None when the string is not a JSON object. The reserved fields are
    removed, so the tool's schema never sees them.
    """
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None, "", None
    if not isinstance(parsed, dict):
        return None, "", None
    rationale = parsed.pop(RATIONALE_FIELD, "")
    confidence = parsed.pop(CONFIDENCE_FIELD, None)
    if not isinstance(rationale, str):
        rationale = str(rationale)
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not 0 <= confidence <= 1
    ):
        confidence = None
    return parsed, rationale[:2000], float(confidence) if confidence is not None else None


def _args_hash(tool: str, arguments: dict[str, Any] | None, raw: str) -> str:
    material = _canonical_json([tool, arguments]) if arguments is not None else f"{tool}\0{raw}"
    return hashlib.sha256(material.encode()).hexdigest()


def _model_step(run: Run, seq: int, agent: Agent) -> None:
    messages = run.checkpoint["messages"]
    record = _StepRecord(
        kind=StepKind.MODEL,
        state=_conversation_state(messages),
        started_at=timezone.now(),
        model=run.model,
        prompt_version=run.prompt_version,
    )
    try:
        reply = model_complete(
            model=run.model,
            messages=messages,
            tools=[tool.openai_schema() for tool in agent.tools],
        )
    except ModelCallFailed as exc:
        error = error_payload(exc.error_class, exc.message)
        record.status = StepStatus.ERROR
        record.error_class = exc.error_class
        record.outcome = {"error": error}
        record.latency_ms = exc.latency_ms
        log.warning("model call failed: %s", exc.error_class)

        def apply_failure(locked: Run) -> None:
            record.create(locked, seq)
            locked.model_latency_ms += record.latency_ms
            _fail(locked, error)

        _commit(run, seq, apply_failure)
        return

    cost = model_call_cost(
        model=reply.model, tokens_in=reply.tokens_in, tokens_out=reply.tokens_out
    )
    log.info(
        "model step %s: %s, %s+%s tokens, %s ms",
        seq,
        f"{len(reply.tool_calls)} tool call(s)" if reply.tool_calls else "final answer",
        reply.tokens_in,
        reply.tokens_out,
        reply.latency_ms,
    )
    record.latency_ms = reply.latency_ms
    record.tokens_in = reply.tokens_in
    record.tokens_out = reply.tokens_out
    record.cost_usd = cost
    record.model = reply.model
    parsed = [(call, *_parse_arguments(call.raw_arguments)) for call in reply.tool_calls]
    if parsed:
        record.action = {
            "type": "tool_calls",
            "calls": [
                {"tool": call.name, "arguments": args if args is not None else call.raw_arguments}
                for call, args, _, _ in parsed
            ],
        }
        record.reason = parsed[0][2]
        record.confidence = parsed[0][3]
    else:
        record.action = {"type": "final_answer"}
        record.reason = reply.content[:2000]
    record.outcome = {"finish_reason": reply.finish_reason, "content": reply.content}
    reply_error = _reply_error(reply)
    if reply_error is not None:
        record.status = StepStatus.ERROR
        record.error_class = reply_error["class"]

    def apply(locked: Run) -> None:
        record.create(locked, seq)
        locked.tokens_in += reply.tokens_in
        locked.tokens_out += reply.tokens_out
        locked.cost_usd += cost or 0
        locked.model_latency_ms += reply.latency_ms
        if reply_error is not None:
            _fail(locked, reply_error)
            return
        checkpoint = locked.checkpoint
        checkpoint["messages"].append(reply.assistant_message())
        if not parsed:
            _finish(locked, RunState.SUCCEEDED, output=reply.content)
            return
        actions = [
            Action.objects.create(
                run=locked,
                proposed_seq=seq,
                index=index,
                tool_call_id=call.id,
                tool=call.name,
                raw_arguments=call.raw_arguments,
                arguments=args,
                args_hash=_args_hash(call.name, args, call.raw_arguments),
                rationale=rationale,
                confidence=confidence,
                idempotency_key=f"{locked.id}:{seq}:{index}",
            )
            for index, (call, args, rationale, confidence) in enumerate(parsed)
        ]
        checkpoint["pending_actions"] = [action.pk for action in actions]

    _commit(run, seq, apply)


def _reply_error(reply: ModelReply) -> dict[str, Any] | None:
    if reply.refusal:
        return error_payload(ErrorClass.MODEL_REFUSAL, reply.refusal[:500])
    if not reply.tool_calls and not reply.content.strip():
        return error_payload(
            ErrorClass.MODEL_OUTPUT_INVALID, "the model returned neither text nor a tool call"
        )
    return None


# --- tool steps ------------------------------------------------------------------------------


def _tool_step(run: Run, seq: int, agent: Agent, action_id: int) -> None:
    action = Action.objects.get(pk=action_id, run=run)
    record = _StepRecord(
        kind=StepKind.TOOL,
        state=_conversation_state(run.checkpoint["messages"]),
        started_at=timezone.now(),
        action={
            "tool": action.tool,
            "arguments": action.arguments if action.arguments is not None else action.raw_arguments,
            "idempotency_key": action.idempotency_key,
        },
        reason=action.rationale,
        confidence=action.confidence,
        prompt_version=run.prompt_version,
    )
    started = time.perf_counter()
    result, error = _tool_call(run, agent, action)
    record.latency_ms = round((time.perf_counter() - started) * 1000)
    if error is not None:
        record.status = StepStatus.ERROR
        record.error_class = error["class"]
        record.outcome = {"error": error}
        log.info("tool %s failed: %s", action.tool, error["class"])
    else:
        record.outcome = {"result": result}
        log.info("tool %s succeeded", action.tool)
    tool_message = {"error": error} if error is not None else result

    def apply(locked: Run) -> None:
        step = record.create(locked, seq)
        Action.objects.filter(pk=action.pk).update(
            status=ActionStatus.FAILED if error else ActionStatus.SUCCEEDED,
            result=tool_message,
            error_class=error["class"] if error else "",
            step=step,
            executed_at=timezone.now(),
        )
        checkpoint = locked.checkpoint
        checkpoint["messages"].append(
            {
                "role": "tool",
                "tool_call_id": action.tool_call_id,
                "content": json.dumps(tool_message, cls=DjangoJSONEncoder),
            }
        )
        checkpoint["pending_actions"] = [
            pk for pk in checkpoint.get("pending_actions", []) if pk != action.pk
        ]
        locked.tool_calls += 1

    _commit(run, seq, apply)


def _tool_call(
    run: Run, agent: Agent, action: Action
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Validate and run one proposed tool call; return (result, error), one of them None."""
    tool = agent.tool(action.tool)
    if tool is None:
        known = ", ".join(t.name for t in agent.tools)
        return None, error_payload(
            ErrorClass.TOOL_UNKNOWN, f"there is no tool named {action.tool!r}; tools: {known}"
        )
    if action.arguments is None:
        return None, error_payload(
            ErrorClass.TOOL_ARGS_INVALID,
            "the arguments are not a JSON object",
            raw=action.raw_arguments[:500],
        )
    try:
        validated = tool.input_schema.model_validate(action.arguments)
    except ValidationError as exc:
        return None, error_payload(
            ErrorClass.TOOL_ARGS_INVALID,
            f"the arguments do not match the {tool.name} schema",
            errors=json.loads(exc.json(include_url=False, include_context=False)),
        )
    return _tool_execute(run, tool, action, validated)


def _tool_execute(
    run: Run, tool: Tool, action: Action, validated: Any
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    # Record the intent before the effect: an action left EXECUTING after a crash shows
    # that the effect may have happened, and the redo runs under the same key.
    Action.objects.filter(pk=action.pk, status=ActionStatus.PROPOSED).update(
        status=ActionStatus.EXECUTING
    )
    context = ToolContext(
        run_id=str(run.id),
        trace_id=run.trace_id,
        idempotency_key=action.idempotency_key,
        input=run.input,
    )
    try:
        result = tool.func(validated, context)
    except ToolError as exc:
        return None, error_payload(ErrorClass.TOOL_ERROR, exc.message, code=exc.code, **exc.details)
    except Exception as exc:  # a bug in the tool: the agent is told, the worker survives
        log.exception("tool %s crashed", tool.name)
        return None, error_payload(ErrorClass.TOOL_CRASHED, f"{type(exc).__name__}: {exc}")
    return json.loads(json.dumps(result, cls=DjangoJSONEncoder)), None


# --- recovery --------------------------------------------------------------------------------


def runs_recover_stalled(*, limit: int = 500) -> int:
    """Re-enqueue active runs whose step was lost; return how many.

    A step is lost when its worker died holding the lease (the lease expired), or when its
    message never reached a worker (enqueued longer ago than a lease lasts, not claimed).
    Re-enqueueing is harmless if the step was not lost after all: the claim refuses a
    duplicate.
    """
    now = timezone.now()
    lease = timedelta(seconds=settings.AGENTDESK_STEP_LEASE_S)
    stalled = (
        Q(lease_token__isnull=False, lease_expires_at__lt=now)
        | Q(lease_token__isnull=True, enqueued_at__lt=now - lease)
        | Q(lease_token__isnull=True, enqueued_at__isnull=True)
    )
    ids = list(
        Run.objects.filter(Q(state__in=ACTIVE_STATES) & stalled)
        .order_by("enqueued_at")
        .values_list("pk", flat=True)[:limit]
    )
    recovered = 0
    for run_id in ids:
        with transaction.atomic():
            run = (
                Run.objects.select_for_update(skip_locked=True)
                .filter(Q(pk=run_id) & Q(state__in=ACTIVE_STATES) & stalled)
                .first()
            )
            if run is None:
                continue
            with trace_context(run.trace_id):
                log.warning("run %s stalled at step %s; re-enqueued", run.id, run.next_seq)
            # The expired lease is dropped: a worker that is merely slow, not dead, finds
            # its lease gone at commit and discards its result.
            run.lease_token = None
            run.lease_expires_at = None
            _enqueue_next_step(run)
            run.save(update_fields=["lease_token", "lease_expires_at", "enqueued_at", "updated_at"])
            recovered += 1
    return recovered
