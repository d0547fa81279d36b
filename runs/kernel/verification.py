"""Running an agent's verifiers: deterministic checks of calls and answers against the data.

A verifier (``agents.definition.Verifier``) is the agent's code; this module gives it what
the run did and turns its failures into one structured ``verification_failed`` error. What
happens next is the caller's: a refused call goes back to the model as its tool result
(runs.kernel.tool_step), a refused answer back to the model or to a person (runs.kernel.model_step).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentdesk.errors import ErrorClass, error_payload
from agents.definition import ActionDone, Agent, Verifier, VerifierContext, VerifierStage
from runs.kernel.stepping import mark_degraded
from runs.kernel.transitions import park_for_human
from runs.models import Action, Degradation, Run

# What a refused answer tells the model, before the verifiers' own words. A system message:
# it comes from the runtime, not from the customer, and the model must not take it for one.
ANSWER_REFUSED = (
    "Your final answer was not accepted: {failures}. Finish the task with your tools, or "
    "give a final answer that states only what your tool calls actually did."
)


def actions_done(run: Run, *, excluding: int | None = None) -> tuple[ActionDone, ...]:
    """The run's proposed calls in order, with what came of each (one query).

    ``excluding``: the id of the call being checked, which is not among what was done.
    """
    actions = Action.objects.filter(run=run).order_by("proposed_seq", "index")
    if excluding is not None:
        actions = actions.exclude(pk=excluding)
    return tuple(
        ActionDone(tool=tool, arguments=arguments, status=status, result=result)
        for tool, arguments, status, result in actions.values_list(
            "tool", "arguments", "status", "result"
        )
    )


def verification_error(
    verifiers: tuple[Verifier, ...], context: VerifierContext
) -> dict[str, Any] | None:
    """Run ``verifiers`` on ``context``; None if every one holds, else one structured error.

    Every verifier runs, so the model (or the person) hears every reason at once rather
    than one per attempt.
    """
    failures = [
        {"verifier": verifier.name, "message": message}
        for verifier in verifiers
        if (message := verifier.check(context)) is not None
    ]
    if not failures:
        return None
    return error_payload(
        ErrorClass.VERIFICATION_FAILED,
        "; ".join(f"{f['verifier']}: {f['message']}" for f in failures)[:1000],
        failures=failures,
    )


def call_verification(
    run: Run, agent: Agent, action: Action, arguments: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The verifiers of a proposed call, before the policy; None when none refuses it."""
    verifiers = agent.verifiers_of(VerifierStage.CALL, action.tool)
    if not verifiers:
        return None
    context = VerifierContext(
        input=run.input,
        actions=actions_done(run, excluding=action.pk),
        tool=action.tool,
        arguments=arguments,
        idempotency_key=action.idempotency_key,
    )
    return verification_error(verifiers, context)


def answer_verification(run: Run, agent: Agent, answer: str) -> dict[str, Any] | None:
    """The verifiers of a final answer, against everything the run's calls did."""
    verifiers = agent.verifiers_of(VerifierStage.ANSWER)
    if not verifiers:
        return None
    context = VerifierContext(input=run.input, actions=actions_done(run), answer=answer)
    error = verification_error(verifiers, context)
    if error is not None:
        error["details"]["answer"] = answer[:2000]
    return error


def answer_refused_message(error: dict[str, Any]) -> dict[str, str]:
    """The message that tells the model why its final answer was not accepted."""
    return {"role": "system", "content": ANSWER_REFUSED.format(failures=error["message"])}


def verification_failed(run: Run, agent: Agent, error: dict[str, Any]) -> None:
    """Count a verifier's refusal (inside ``apply``); at the agent's limit, ask a person.

    Until then the model has the refusal (as its call's result, or a system message after
    its answer) and tries again. The count starts again once a person has the run, so a
    run that a person resumes gives the model its attempts anew.
    """
    mark_degraded(run, Degradation.VERIFICATION_FAILED)
    checkpoint = run.checkpoint
    failures = checkpoint.get("verification_failures", 0) + 1
    if failures < agent.verification_attempts:
        checkpoint["verification_failures"] = failures
        return
    checkpoint["verification_failures"] = 0
    park_for_human(run, error)
