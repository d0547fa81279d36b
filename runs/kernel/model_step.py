"""A model step: ask the fallback chain for the agent's next move and record it.

Each step first picks its task kind (the agent's ``task_kind``, from what the run has done
so far). The chain is that kind's model tier in the run's configuration version (the
primary model, then its fallbacks), the agent's optional rule-based fallback, then a human
(or, without one, the dead-letter list). A link is skipped while its endpoint's breaker is
open, or when its endpoint alias is not configured here; a transient failure is retried
on the same link with backoff (a later task, never a sleep); a link whose retries are
spent, that refuses, or whose output stays malformed after one repair attempt hands over
to the next link for the next attempt. Each attempt is its own step, recorded with its
error class, its link and its task kind.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from django.conf import settings
from django.utils import timezone
from pydantic import ValidationError

from agentdesk.errors import ErrorClass, error_payload
from agentdesk.redaction import redact_text, redact_value
from agents.definition import (
    CONFIDENCE_FIELD,
    RATIONALE_FIELD,
    Agent,
    ModelRoute,
    RuleContext,
    TaskContext,
    Tool,
)
from releases.configuration import config_for_run
from runs.gateway.breakers import (
    CircuitOpen,
    breaker_allow,
    breaker_record_failure,
    breaker_record_success,
    model_breaker_name,
)
from runs.gateway.client import ModelCallFailed, ModelReply, ProposedCall, model_complete
from runs.gateway.pricing import model_call_cost
from runs.gateway.retrying import retry_delay
from runs.kernel.limits import run_spent
from runs.kernel.stepping import (
    StepRecord,
    action_audit,
    args_hash,
    commit,
    conversation_state,
    mark_degraded,
    release_db_connection,
)
from runs.kernel.tool_step import InlineCall, account_result, read_calls_inline, settle_action
from runs.kernel.transitions import dead_letter, finish, park_for_human
from runs.kernel.unit_of_work import StepWork
from runs.kernel.verification import (
    answer_refused_message,
    answer_verification,
    verification_failed,
)
from runs.models import Action, ActionStatus, Degradation, Run, RunState, StepKind

log = logging.getLogger("runs.services")

RULE = "rule"
HUMAN = "human"
Link = ModelRoute | str


def chain(agent: Agent, tier: tuple[ModelRoute, ...]) -> list[Link]:
    """A step's fallback chain: its task kind's tier, then the agent's rule and human."""
    links: list[Link] = list(tier)
    if agent.rule_fallback is not None:
        links.append(RULE)
    if agent.escalate_to_human:
        links.append(HUMAN)
    return links


@dataclass
class _Outcome:
    """What the chain produced for this step."""

    reply: ModelReply | None
    link: Link | None
    link_index: int
    error: dict[str, Any] | None = None
    retry_after_s: float | None = None
    skipped: tuple[str, ...] = ()
    unconfigured: tuple[str, ...] = ()
    latency_ms: int = 0


RATIONALE_MAX = 2000

# How runs.kernel.tool_step stores a call that did not return a result: {"error": {...}} as JSON.
_TOOL_ERROR_PREFIX = '{"error": '


def task_context(run: Run) -> TaskContext:
    """What the agent's ``task_kind`` is told, read from the checkpoint (no query)."""
    names: dict[str, str] = {}
    called: list[str] = []
    replies = 0
    for message in run.checkpoint["messages"]:
        role = message.get("role")
        if role == "assistant":
            replies += 1
            for call in message.get("tool_calls") or ():
                names[call["id"]] = call["function"]["name"]
        elif role == "tool":
            name = names.get(message.get("tool_call_id", ""))
            if name and not (message.get("content") or "").startswith(_TOOL_ERROR_PREFIX):
                called.append(name)
    return TaskContext(tools_called=tuple(called), input=run.input, model_steps=replies)


def _route_degradations(outcome: _Outcome) -> list[Degradation]:
    """How the link that served (or failed) this step departs from the primary's first try."""
    reasons = []
    if outcome.skipped:
        reasons.append(Degradation.BREAKER_OPEN)
    if outcome.link == RULE:
        reasons.append(Degradation.RULE_FALLBACK)
    elif isinstance(outcome.link, ModelRoute) and outcome.link_index > 0:
        reasons.append(Degradation.FALLBACK_MODEL)
    return reasons


def _set_link(checkpoint: dict[str, Any], index: int, kind: str) -> None:
    checkpoint["link"] = index
    checkpoint["link_kind"] = kind


def model_step(run: Run, seq: int, agent: Agent) -> None:
    checkpoint = run.checkpoint
    messages = checkpoint["messages"]
    kind = agent.choose_task_kind(task_context(run))
    links = chain(agent, config_for_run(run=run, agent=agent).tier(kind))
    # The checkpoint's link and attempt count along the chain of the kind that set them;
    # a step of another kind (a tool call since has changed it) starts its own at the top.
    same_kind = checkpoint.get("link_kind", kind) == kind
    start = checkpoint.get("link", 0) if same_kind else 0
    attempt = checkpoint.get("attempt", 0) + 1 if same_kind else 1
    state = conversation_state(messages)
    state["task_kind"] = kind
    record = StepRecord(
        kind=StepKind.MODEL,
        state=state,
        started_at=timezone.now(),
        prompt_version=run.prompt_version,
        attempt=attempt,
    )
    outcome = _ask_chain(run, agent, links, start)
    if outcome.link_index != start:
        # A skipped link moved the step to a later one: that link starts afresh.
        attempt = record.attempt = 1
    if outcome.skipped:
        record.outcome["skipped_open_breakers"] = list(outcome.skipped)
    if outcome.unconfigured:
        record.outcome["skipped_unconfigured_endpoints"] = list(outcome.unconfigured)
    if outcome.link == HUMAN or outcome.link is None:
        _escalate(run, seq, record, outcome, checkpoint)
        return
    record.route = str(outcome.link)
    if outcome.reply is None:
        assert outcome.error is not None
        _record_failed_attempt(run, seq, record, outcome, attempt, kind)
        return
    _record_reply(run, seq, agent, record, outcome, kind)


def _ask_chain(run: Run, agent: Agent, links: list[Link], start: int) -> _Outcome:
    """Ask links from ``start`` on, skipping those whose breaker is open."""
    skipped: list[str] = []
    unconfigured: list[str] = []

    def outcome(reply: ModelReply | None, link: Link | None, index: int, **kw: Any) -> _Outcome:
        return _Outcome(
            reply, link, index, skipped=tuple(skipped), unconfigured=tuple(unconfigured), **kw
        )

    for index in range(start, len(links)):
        link = links[index]
        if link == HUMAN:
            return outcome(None, HUMAN, index)
        if link == RULE:
            return outcome(_rule_reply(run, agent), RULE, index)
        assert isinstance(link, ModelRoute)
        if link.endpoint not in settings.AGENTDESK_LLM_ENDPOINTS:
            # A version named an alias the environment no longer has: the operator's
            # next links serve meanwhile, rather than the run crashing on it.
            log.error("endpoint alias %r is not configured; %s skipped", link.endpoint, link)
            unconfigured.append(str(link))
            continue
        breaker = model_breaker_name(link.endpoint)
        try:
            clean = breaker_allow(name=breaker)
        except CircuitOpen:
            skipped.append(str(link))
            continue
        release_db_connection()
        try:
            reply = model_complete(
                model=link.model,
                endpoint=link.endpoint,
                messages=run.checkpoint["messages"],
                tools=tool_schemas(agent.tools),
            )
        except ModelCallFailed as exc:
            # A request the endpoint refused as invalid says nothing about its health.
            if exc.error_class != ErrorClass.MODEL_REQUEST_INVALID:
                breaker_record_failure(name=breaker, error_class=exc.error_class)
            return outcome(
                None,
                link,
                index,
                error=error_payload(exc.error_class, exc.message),
                retry_after_s=exc.retry_after_s,
                latency_ms=exc.latency_ms,
            )
        breaker_record_success(name=breaker, was_clean=clean)
        return outcome(reply, link, index)
    return outcome(None, None, len(links))


@cache
def tool_schemas(tools: tuple[Tool, ...]) -> list[dict[str, Any]]:
    """The tools as the Chat Completions API describes them, built once per process.

    Building them is pydantic's JSON schema generation, a few milliseconds of CPU for the
    example agent: done on every model step, it was the largest single cost of a step.
    Tools are frozen dataclasses, so the tuple is a sound key. The list is shared by every
    call: never modify it.
    """
    return [tool.openai_schema() for tool in tools]


def _rule_reply(run: Run, agent: Agent) -> ModelReply:
    assert agent.rule_fallback is not None
    started = time.perf_counter()
    tools_called = tuple(
        Action.objects.filter(run=run)
        .order_by("proposed_seq", "index")
        .values_list("tool", flat=True)
    )
    last_error = (run.checkpoint.get("last_error") or {}).get("class", "")
    answer = agent.rule_fallback(
        RuleContext(
            run_id=str(run.id), input=run.input, tools_called=tools_called, error_class=last_error
        )
    )
    calls = tuple(
        ProposedCall(id=f"rule-{run.next_seq}-{i}", name=name, raw_arguments=json.dumps(args))
        for i, (name, args) in enumerate(answer.tool_calls)
    )
    return ModelReply(
        content=answer.content,
        refusal=None,
        tool_calls=calls,
        finish_reason="tool_calls" if calls else "stop",
        model=RULE,
        tokens_in=0,
        tokens_out=0,
        latency_ms=round((time.perf_counter() - started) * 1000),
    )


def _escalate(
    run: Run, seq: int, record: StepRecord, outcome: _Outcome, checkpoint: dict[str, Any]
) -> None:
    """Every model link failed: hand the run to a human, or to the dead-letter list."""
    last = checkpoint.get("last_error") or error_payload(
        ErrorClass.CIRCUIT_OPEN,
        "every model endpoint's breaker is open"
        if not outcome.unconfigured
        else "every model link was skipped (an open breaker or an unconfigured endpoint)",
    )
    error = error_payload(
        ErrorClass(last["class"]),
        f"every link of the fallback chain failed; last: {last['message']}"[:1000],
    )
    record.route = HUMAN if outcome.link == HUMAN else ""
    record.failed(error)

    def apply(locked: Run, work: StepWork) -> None:
        work.add_step(record, seq)
        mark_degraded(locked, *_route_degradations(outcome))
        if outcome.link == HUMAN:
            park_for_human(locked, error)
        else:
            dead_letter(locked, error)

    commit(run, seq, apply)


def _record_failed_attempt(
    run: Run, seq: int, record: StepRecord, outcome: _Outcome, attempt: int, kind: str
) -> None:
    error = outcome.error
    assert error is not None
    record.failed(error)
    record.latency_ms = outcome.latency_ms
    delay = retry_delay(
        attempt=attempt, error_class=error["class"], retry_after_s=outcome.retry_after_s
    )
    log.warning(
        "model call on %s failed (%s), attempt %s; %s",
        outcome.link,
        error["class"],
        attempt,
        f"retry in {delay:.1f} s" if delay is not None else "next link",
    )

    def apply(locked: Run, work: StepWork) -> None:
        work.add_step(record, seq)
        locked.model_latency_ms += outcome.latency_ms
        mark_degraded(locked, *_route_degradations(outcome))
        checkpoint = locked.checkpoint
        checkpoint["last_error"] = error
        if delay is not None:
            mark_degraded(locked, Degradation.RETRIED)
            checkpoint["attempt"] = attempt
            _set_link(checkpoint, outcome.link_index, kind)
        else:
            checkpoint["attempt"] = 0
            _set_link(checkpoint, outcome.link_index + 1, kind)

    commit(run, seq, apply, countdown_s=delay or 0)


def _record_reply(
    run: Run, seq: int, agent: Agent, record: StepRecord, outcome: _Outcome, kind: str
) -> None:
    reply = outcome.reply
    assert reply is not None
    cost = (
        model_call_cost(model=reply.model, tokens_in=reply.tokens_in, tokens_out=reply.tokens_out)
        if outcome.link != RULE
        else None
    )
    record.latency_ms = reply.latency_ms
    record.tokens_in = reply.tokens_in
    record.tokens_out = reply.tokens_out
    record.cost_usd = cost
    record.model = reply.model
    parsed = [_proposed(call) for call in reply.tool_calls]
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
        record.reason = _cut(reply.content, 2000)
    record.outcome = {
        **record.outcome,
        "finish_reason": reply.finish_reason,
        "content": reply.content,
    }
    log.info(
        "model step %s on %s: %s, %s+%s tokens, %s ms",
        seq,
        outcome.link,
        f"{len(parsed)} tool call(s)" if parsed else "final answer",
        reply.tokens_in,
        reply.tokens_out,
        reply.latency_ms,
    )

    unusable = _unusable(reply)
    malformed = bool(parsed) and any(
        _malformed(agent, call.name, args) for call, args, _, _ in parsed
    )
    streak = run.checkpoint.get("malformed_streak", 0) + 1 if malformed else 0
    if unusable is not None:
        record.failed(unusable)
    elif streak >= 2:
        # The repair attempt (the errors fed back last time) did not help: this link's
        # output is not to be trusted for now; the next model call goes to the next link.
        record.failed(
            error_payload(
                ErrorClass.MODEL_OUTPUT_INVALID,
                "the tool calls were malformed again after one repair attempt",
            )
        )

    actions = [
        Action(
            run=run,
            proposed_seq=seq,
            index=index,
            tool_call_id=call.id,
            tool=call.name,
            raw_arguments=call.raw_arguments,
            arguments=args,
            args_hash=args_hash(call.name, args, call.raw_arguments),
            rationale=rationale,
            confidence=confidence,
            idempotency_key=f"{run.id}:{seq}:{index}",
        )
        for index, (call, args, rationale, confidence) in enumerate(parsed)
    ]
    inline: list[InlineCall] = []
    if actions and unusable is None and streak < 2:
        inline = read_calls_inline(
            run,
            agent,
            actions,
            seq=seq,
            spent=run_spent(run).plus(
                steps=1, tokens=reply.tokens_in + reply.tokens_out, cost_usd=cost
            ),
            step_cost=cost or Decimal(0),
            messages=[*run.checkpoint["messages"], reply.assistant_message()],
        )
    retry_in_s = inline[-1].retry_in_s if inline else None
    # A final answer is checked against what the run's calls did before the run may
    # succeed on it (outside the transaction, like the rest of the step's work).
    refused = (
        answer_verification(run, agent, reply.content) if not parsed and unusable is None else None
    )
    if refused is not None:
        record.failed(refused)
    degradations = _route_degradations(outcome)
    if any(call.error and call.error["class"] == ErrorClass.CIRCUIT_OPEN for call in inline):
        degradations.append(Degradation.BREAKER_OPEN)
    if retry_in_s is not None:
        degradations.append(Degradation.RETRIED)

    def apply(locked: Run, work: StepWork) -> None:
        work.add_step(record, seq)
        reads = [work.add_step(call.record, seq + 1 + i) for i, call in enumerate(inline)]
        locked.tokens_in += reply.tokens_in
        locked.tokens_out += reply.tokens_out
        locked.cost_usd += cost or 0
        locked.model_latency_ms += reply.latency_ms
        mark_degraded(locked, *degradations)
        checkpoint = locked.checkpoint
        checkpoint["attempt"] = 0
        if unusable is not None:
            # A refusal or an empty answer: the next link gets the same conversation.
            checkpoint["last_error"] = unusable
            _set_link(checkpoint, outcome.link_index + 1, kind)
            return
        checkpoint["messages"].append(reply.assistant_message())
        if streak >= 2:
            checkpoint["last_error"] = record.outcome["error"]
        else:
            checkpoint.pop("last_error", None)
        checkpoint["malformed_streak"] = streak if streak < 2 else 0
        _set_link(checkpoint, outcome.link_index + 1 if streak >= 2 else 0, kind)
        if not parsed:
            if refused is None:
                finish(locked, RunState.SUCCEEDED, output=reply.content)
            else:
                # Not a success: the model hears why, once; then a person gets the run.
                checkpoint["messages"].append(answer_refused_message(refused))
                verification_failed(locked, agent, refused)
            return
        settled = inline[:-1] if retry_in_s is not None else inline
        for call, step in zip(settled, reads, strict=False):
            settle_action(call.action, step, call.result, call.error, call.verdict)
        work.add_actions(actions)  # settled first: the reads' actions are written as done
        for action in actions:
            action_audit(
                action,
                trace_id=locked.trace_id,
                before=None,
                status=ActionStatus.PROPOSED,
                run=str(locked.id),
                step=seq,
                args_hash=action.args_hash,
                idempotency_key=action.idempotency_key,
                confidence=action.confidence,
            )
        for i, call in enumerate(settled):
            account_result(
                locked,
                call.action,
                seq + 1 + i,
                call.error,
                call.verdict,
                before=ActionStatus.PROPOSED,
            )
        checkpoint["pending_actions"] = [action.pk for action in actions[len(settled) :]]
        if retry_in_s is not None:
            checkpoint["attempt"] = 1  # the call that failed just now, recorded as a step

    commit(run, seq, apply, steps=1 + len(inline), countdown_s=retry_in_s or 0)


def _proposed(call: ProposedCall) -> tuple[ProposedCall, dict[str, Any] | None, str, float | None]:
    """A proposed call, redacted before anything records, hashes, validates or runs it.

    The model's words (its arguments, its rationale, even the call's id and tool name) are
    stored on the action and its steps and shown to reviewers, and a hostile endpoint can
    put the very key it was called with into them. Redacted once, here, so that the
    arguments the hash covers, the policy judges, a reviewer approves and the tool runs are
    one and the same. The conversation's copy of the reply is redacted alike by the commit
    (runs.kernel.stepping), with the same result: the tool message's ``tool_call_id`` still matches.
    Redacted before the rationale is cut: a cut through a secret would leave its first half.
    """
    arguments, rationale, confidence = parse_arguments(call.raw_arguments)
    return (
        ProposedCall(
            id=redact_text(call.id),
            name=redact_text(call.name),
            raw_arguments=redact_text(call.raw_arguments),
        ),
        redact_value(arguments) if arguments is not None else None,
        redact_text(rationale)[:RATIONALE_MAX],  # redacted before it is cut
        confidence,
    )


def _cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, redacted first if it is cut.

    A cut through a secret would leave its first half, which redaction after the cut (of
    the step record, of the error) would no longer recognise. An uncut text is redacted
    where it is stored, as it is.
    """
    return redact_text(text)[:limit] if len(text) > limit else text


def _unusable(reply: ModelReply) -> dict[str, Any] | None:
    if reply.refusal:
        return error_payload(ErrorClass.MODEL_REFUSAL, _cut(reply.refusal, 500))
    if reply.finish_reason == "length":
        return error_payload(
            ErrorClass.MODEL_OUTPUT_INVALID, "the reply was cut off at the model's length limit"
        )
    if not reply.tool_calls and not reply.content.strip():
        return error_payload(
            ErrorClass.MODEL_OUTPUT_INVALID, "the model returned neither text nor a tool call"
        )
    return None


def _malformed(agent: Agent, name: str, arguments: dict[str, Any] | None) -> bool:
    tool = agent.tool(name)
    if tool is None or arguments is None:
        return True
    try:
        tool.input_schema.model_validate(arguments)
    except ValidationError:
        return True
    return False


def parse_arguments(raw: str) -> tuple[dict[str, Any] | None, str, float | None]:
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
    return parsed, rationale, float(confidence) if confidence is not None else None
