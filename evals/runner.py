"""Running an eval: every example of a dataset version against one release, in a sandbox.

1. ``eval_start`` records the eval and one pending ``EvalResult`` per example, audits it,
   and on commit sends one Celery task per example (``evals.tasks.eval_example``). Each
   task takes ids and may run twice: a result is recorded once (``_result_record``
   writes only over a result that has none).
2. A step example (level 1) is one model call through the gateway (evals.calls), on the
   release's prompt and model tier; each proposed call is judged by the release's policy
   as the runtime would judge it, without running anything.
3. A task example (level 2) is a sandboxed run of the example's input under the release
   (runs.kernel.sandbox: read tools run for real, write tools never do, nobody is asked
   to review). When that run settles, the sandbox tells ``sandbox_run_settled``, which
   sends the scoring task; the judge grades its final answer (evals.judge).
4. A failing example (the model down, a crash, an unreadable judge) is recorded as an
   error with zero scores and never stops the eval. The last result in finishes the
   eval under its row's lock: the aggregates (evals.scoring) are written then.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery import current_app
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from pydantic import ValidationError

from agentdesk.errors import ErrorClass, error_payload
from agentdesk.redaction import redact_text, redact_value
from agents.definition import Agent, ModelRoute, TaskContext
from agents.registry import agent_get
from audit.log import audit_record
from audit.models import AuditVerb
from evals.calls import ModelUsage, complete_on_routes
from evals.judge import JudgeUnreadable, judge_current, judge_grade
from evals.models import DatasetVersion, Eval, EvalResult, EvalState, ResultStatus
from evals.scoring import Call, Scored, aggregate, error_scores, step_scores, task_scores
from policy.engine import policy_evaluate
from releases.configuration import config_of_version
from releases.models import Release
from releases.prompts import prompt_render
from runs.gateway.client import ModelCallFailed, ModelReply
from runs.kernel.exposure import exposure_facts, exposure_summed
from runs.kernel.model_step import parse_arguments, tool_schemas
from runs.kernel.transitions import step_sender_register
from runs.models import Action, ActionStatus, Run, RunPurpose, RunState
from runs.services import RunInputInvalid, run_sandbox_submit, run_step_execute

if TYPE_CHECKING:
    from django.contrib.auth.models import User

log = logging.getLogger(__name__)

# A sandboxed run that ended in one of these has settled: it will not move again.
SETTLED_STATES = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.DEAD_LETTERED, RunState.NEEDS_HUMAN}
)


class EvalRefused(ValueError):
    """An eval that cannot be started; the message says why, for a person."""


# --- starting -----------------------------------------------------------------------------------


def eval_start(
    *, release: Release, dataset_version: DatasetVersion, user: User | None, queue: bool = True
) -> Eval:
    """Record the eval and queue its examples (on commit); EvalRefused if it cannot run.

    ``queue=False`` sends nothing to the broker: the caller runs the examples itself
    (``eval_run_inline``), so no worker picks up a second copy of each later.
    """
    dataset = dataset_version.dataset
    if dataset.agent_name != release.agent_name:
        raise EvalRefused(
            f"The dataset {dataset} is of agent {dataset.agent_name}, "
            f"the release of {release.agent_name}."
        )
    examples = dataset_version.examples
    if not examples:
        raise EvalRefused(f"{dataset}@{dataset_version.number} holds no examples.")
    judge = judge_current(agent_name=release.agent_name)
    with transaction.atomic():
        evaluation = Eval.objects.create(
            agent_name=release.agent_name,
            release=release,
            dataset_version=dataset_version,
            judge=judge,
            total=len(examples),
            created_by=user,
        )
        results = EvalResult.objects.bulk_create(
            EvalResult(
                eval=evaluation,
                index=index,
                example_id=example["id"],
                kind=example["kind"],
            )
            for index, example in enumerate(examples)
        )
        audit_record(
            actor=user,
            verb=AuditVerb.EVAL_STARTED,
            object_type="eval",
            object_id=str(evaluation.pk),
            after={
                "agent": release.agent_name,
                "release": release.number,
                "dataset": str(dataset),
                "dataset_version": dataset_version.number,
                "examples": len(examples),
                "judge": judge.number,
            },
        )
        ids = [result.pk for result in results]
        if queue:
            transaction.on_commit(lambda: _send_examples(ids), robust=True)
    return evaluation


# The tasks (evals.tasks) call this module, so they are sent by name.
EXAMPLE_TASK = "evals.tasks.eval_example"
SCORE_TASK = "evals.tasks.eval_task_score"


def _send_examples(result_ids: Sequence[int]) -> None:
    if _inline.on:
        return
    for result_id in result_ids:
        current_app.send_task(EXAMPLE_TASK, args=(result_id,))


def eval_run_inline(*, evaluation: Eval, max_steps: int = 60) -> Eval:
    """Run every pending example of ``evaluation`` in this process, one after another.

    For a command without workers (``eval run --inline``, the demo's seed): each task
    example's sandboxed run is stepped here, and nothing is sent to the broker meanwhile.
    Slower than the workers (no parallelism), the same results. A run that needs a step
    later (a backoff) waits for it here.
    """
    replaced = step_sender_register(lambda run_id, seq, countdown_s: None)
    _inline.on = True
    try:
        for result in EvalResult.objects.filter(eval=evaluation).order_by("index"):
            eval_example_run(result_id=result.pk)
            result.refresh_from_db(fields=["run", "status"])
            if result.run_id is None or result.status != ResultStatus.RUNNING:
                continue
            _step_until_settled(result.run_id, max_steps)
            eval_task_score(result_id=result.pk)
    finally:
        _inline.on = False
        step_sender_register(replaced)
    evaluation.refresh_from_db()
    return evaluation


class _Inline(threading.local):
    on = False


_inline = _Inline()


def _step_until_settled(run_id: Any, max_steps: int) -> None:
    for _ in range(max_steps):
        run = Run.objects.only("state", "next_seq", "enqueued_at").get(pk=run_id)
        if run.state in SETTLED_STATES:
            return
        wait = (run.enqueued_at - timezone.now()).total_seconds() if run.enqueued_at else 0
        if wait > 0:
            time.sleep(min(wait, 30))
        run_step_execute(run_id=str(run_id), seq=run.next_seq)


# --- one example ---------------------------------------------------------------------------------


def eval_example_run(*, result_id: int) -> None:
    """Run one example (the task's body): a step example at once, a task example's run."""
    result = (
        EvalResult.objects.select_related(
            "eval__release__prompt_version",
            "eval__release__config_version",
            "eval__dataset_version",
        )
        .filter(pk=result_id)
        .first()
    )
    if result is None or result.status in (ResultStatus.SCORED, ResultStatus.ERROR):
        return
    if result.eval.state != EvalState.RUNNING:
        return
    example = result.eval.dataset_version.examples[result.index]
    try:
        agent = agent_get(result.eval.agent_name)
        if example["kind"] == "step":
            _step_example(result, example, agent)
        else:
            _task_example_start(result, example)
    except Exception as exc:  # one example's failure is its result, never the eval's end
        log.exception("eval example %s failed", result_id)
        _result_error(result, example, exc)


def _step_example(result: EvalResult, example: dict[str, Any], agent: Agent) -> None:
    release = result.eval.release
    config = config_of_version(version=release.config_version, agent=agent)
    messages = _conversation(example, agent, release)
    kind = agent.choose_task_kind(_task_context(example, messages))
    routes = tuple(link for link in config.tier(kind) if isinstance(link, ModelRoute))
    reply, usage = complete_on_routes(routes, messages, tools=tool_schemas(agent.tools))
    calls = _judged(agent, release, reply, example.get("input") or {}, messages)
    _result_record(
        result,
        example,
        scores=step_scores(example, calls),
        calls=[call.as_json() for call in calls],
        answer=reply.content,
        usage=usage,
        steps=1,
    )


def _wire(message: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the API takes it: no null fields."""
    return {key: value for key, value in message.items() if value is not None}


def _conversation(example: dict[str, Any], agent: Agent, release: Release) -> list[dict[str, Any]]:
    """The example's conversation under the release's own system prompt, when it can be made."""
    messages = [_wire(message) for message in example["messages"]]
    if example.get("input") is not None and messages[0].get("role") == "system":
        validated = agent.input_schema.model_validate(example["input"])
        messages[0] = {
            "role": "system",
            "content": prompt_render(
                agent=agent, version=release.prompt_version, validated_input=validated
            ),
        }
    return messages


def _task_context(example: dict[str, Any], messages: list[dict[str, Any]]) -> TaskContext:
    """What the agent's ``task_kind`` sees: the tools called so far in the conversation."""
    names = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            names[call.get("id")] = (call.get("function") or {}).get("name", "")
    called = tuple(
        names.get(message.get("tool_call_id"), "")
        for message in messages
        if message.get("role") == "tool"
    )
    return TaskContext(
        tools_called=tuple(name for name in called if name),
        input=example.get("input") or {},
        model_steps=sum(1 for message in messages if message.get("role") == "assistant"),
    )


def _judged(
    agent: Agent,
    release: Release,
    reply: ModelReply,
    run_input: dict[str, Any],
    messages: list[dict[str, Any]],
) -> list[Call]:
    """The reply's calls with what the release's policy makes of each, as the runtime would.

    The policy reads the subject's live sums, like a live call (nothing of this is
    recorded, so it counts towards nothing); a call with arguments that do not parse or
    validate is not judged (its ``policy`` is None).
    """
    policy = config_of_version(version=release.config_version, agent=agent).policy
    run_facts = {
        "steps": sum(1 for m in messages if m.get("role") in ("assistant", "tool")),
        "tool_calls": sum(1 for m in messages if m.get("role") == "tool"),
        "cost_usd": 0.0,
    }
    calls = []
    for proposed in reply.tool_calls:
        arguments, _, confidence = parse_arguments(proposed.raw_arguments)
        tool = agent.tool(proposed.name)
        if tool is None or arguments is None:
            calls.append(Call(proposed.name, arguments))
            continue
        try:
            validated = tool.input_schema.model_validate(arguments)
        except ValidationError:
            calls.append(Call(proposed.name, arguments))
            continue
        plain = json.loads(validated.model_dump_json())
        exposure = exposure_summed(
            exposure_facts(
                agent=agent,
                tool_name=tool.name,
                arguments=validated.model_dump(),
                run_input=run_input,
            ),
            policy=policy,
            run_id=None,
            exclude_action=None,
        )
        verdict = policy_evaluate(
            policy=policy,
            tool_name=tool.name,
            risk=tool.risk,
            arguments=validated.model_dump(),
            confidence=confidence,
            run_input=run_input,
            run_facts=run_facts,
            evidence=exposure.evidence,
        )
        calls.append(Call(tool.name, plain, str(verdict.verdict), verdict.queue or None))
    return calls


def _task_example_start(result: EvalResult, example: dict[str, Any]) -> None:
    """Start the example's sandboxed run, once: the result row is locked while it is made."""
    with transaction.atomic():
        locked = EvalResult.objects.select_for_update().get(pk=result.pk)
        if locked.status != ResultStatus.PENDING:
            return  # a second delivery: the run exists
        try:
            run = run_sandbox_submit(
                release=result.eval.release,
                run_input=example["input"],
                purpose=RunPurpose.EVAL,
                submitted_by=result.eval.created_by,
            )
        except RunInputInvalid as exc:
            raise ValueError(f"the example's input was refused: {exc.message}") from None
        locked.run = run
        locked.status = ResultStatus.RUNNING
        locked.save(update_fields=["run", "status"])


def sandbox_run_settled(run: Run) -> None:
    """The sandbox's listener (registered by the app): score the run's example on commit."""
    if run.purpose != RunPurpose.EVAL:
        return
    run_id = run.pk

    def send() -> None:
        result_id = (
            EvalResult.objects.filter(run_id=run_id, status=ResultStatus.RUNNING)
            .values_list("pk", flat=True)
            .first()
        )
        if result_id is not None and not _inline.on:
            current_app.send_task(SCORE_TASK, args=(result_id,))

    transaction.on_commit(send, robust=True)


def eval_task_score(*, result_id: int) -> None:
    """Score a task example whose run has settled (the task's body; safe to run twice)."""
    result = (
        EvalResult.objects.select_related("eval__judge", "eval__dataset_version", "run")
        .filter(pk=result_id, status=ResultStatus.RUNNING)
        .first()
    )
    if result is None or result.run is None or result.run.state not in SETTLED_STATES:
        return
    example = result.eval.dataset_version.examples[result.index]
    run = result.run
    try:
        calls = _calls_made(run)
        usage = ModelUsage(
            tokens_in=run.tokens_in,
            tokens_out=run.tokens_out,
            latency_ms=_duration_ms(run),
            cost_usd=run.cost_usd,
        )
        grade = None
        judge: dict[str, Any] = {}
        if example.get("rubric"):
            graded = judge_grade(result.eval.judge, rubric=example["rubric"], answer=run.output)
            usage.add(graded.usage)
            usage.latency_ms -= graded.usage.latency_ms  # the run's duration is its latency
            grade = graded.score
            judge = {**graded.as_json(), "cost_usd": str(graded.usage.cost_usd)}
        _result_record(
            result,
            example,
            scores=task_scores(example, calls, state=run.state, answer=run.output, judge=grade),
            calls=[call.as_json() for call in calls],
            answer=run.output,
            usage=usage,
            steps=run.next_seq,
            judge=judge,
        )
    except Exception as exc:
        log.exception("scoring eval example %s failed", result_id)
        _result_error(result, example, exc)


def _calls_made(run: Run) -> list[Call]:
    """The calls that went through, in order: ran, or answered by the sandbox."""
    return [
        Call(action.tool, action.arguments, action.verdict or None)
        for action in Action.objects.filter(run=run, status=ActionStatus.SUCCEEDED).order_by(
            "proposed_seq", "index"
        )
    ]


def _duration_ms(run: Run) -> int:
    if run.started_at is None or run.finished_at is None:
        return run.model_latency_ms
    return round((run.finished_at - run.started_at).total_seconds() * 1000)


# --- recording ----------------------------------------------------------------------------------


def _result_error(result: EvalResult, example: dict[str, Any], exc: Exception) -> None:
    if isinstance(exc, ModelCallFailed):
        error = error_payload(exc.error_class, exc.message)
    elif isinstance(exc, JudgeUnreadable):
        error = error_payload(ErrorClass.MODEL_OUTPUT_INVALID, str(exc))
    else:
        error = error_payload(ErrorClass.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:1000])
    _result_record(
        result,
        example,
        scores=error_scores(example),
        calls=[],
        answer="",
        usage=ModelUsage(),
        steps=0,
        error=error,
    )


def _result_record(
    result: EvalResult,
    example: dict[str, Any],
    *,
    scores: dict[str, float | None],
    calls: list[dict[str, Any]],
    answer: str,
    usage: ModelUsage,
    steps: int,
    judge: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    """Write the result once, count it on its eval, and finish the eval with the last one."""
    with transaction.atomic():
        written = EvalResult.objects.filter(
            pk=result.pk, status__in=(ResultStatus.PENDING, ResultStatus.RUNNING)
        ).update(
            status=ResultStatus.ERROR if error else ResultStatus.SCORED,
            # The model's and the judge's words, as everything they say is stored: redacted.
            scores=scores,
            calls=redact_value(calls),
            answer=redact_text(answer),
            judge=redact_value(judge or {}),
            error=redact_value(error),
            cost_usd=usage.cost_usd,
            tokens_in=usage.tokens_in,
            tokens_out=usage.tokens_out,
            latency_ms=max(usage.latency_ms, 0),
            steps=steps,
            finished_at=timezone.now(),
        )
        if not written:
            return  # a second delivery: the first one counted
        evaluation = Eval.objects.select_for_update().get(pk=result.eval_id)
        evaluation.done = F("done") + 1
        evaluation.cost_usd = F("cost_usd") + usage.cost_usd
        evaluation.save(update_fields=["done", "cost_usd"])
        evaluation.refresh_from_db(fields=["done", "cost_usd", "total", "state"])
        if evaluation.done == evaluation.total and evaluation.state == EvalState.RUNNING:
            _finish(evaluation)


def _finish(evaluation: Eval) -> None:
    results = EvalResult.objects.filter(eval=evaluation).only(
        "scores", "status", "cost_usd", "tokens_in", "tokens_out", "latency_ms", "steps"
    )
    evaluation.metrics = aggregate(
        Scored(
            scores=result.scores,
            usage={
                "cost_usd": float(result.cost_usd),
                "tokens_in": result.tokens_in,
                "tokens_out": result.tokens_out,
                "latency_ms": result.latency_ms,
                "steps": result.steps,
            },
            error=result.status == ResultStatus.ERROR,
        )
        for result in results
    )
    evaluation.state = EvalState.FINISHED
    evaluation.finished_at = timezone.now()
    evaluation.save(update_fields=["metrics", "state", "finished_at"])
    audit_record(
        actor=None,
        actor_label="worker",
        verb=AuditVerb.EVAL_FINISHED,
        object_type="eval",
        object_id=str(evaluation.pk),
        after={
            "examples": evaluation.metrics["examples"],
            "errors": evaluation.metrics["errors"],
            "metrics": {name: m["mean"] for name, m in evaluation.metrics["metrics"].items()},
            "cost_usd": str(evaluation.cost_usd),
        },
    )
