"""Assertions shared by the tests that run many runs through real workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import Count

from agents.registry import agent_get
from examples.support.models import Handoff, Refund, Reply
from runs.models import TERMINAL_STATES, Action, ActionStatus, Run, RunState, Step
from runs.simulator.protocol import canonical_json, estimate_tokens
from tests.conftest import wait_until

# Where a run rests: ended, or parked for a person (a verifier refused it, a hand-off
# failed), which no worker moves on.
RESTING_STATES = frozenset({*TERMINAL_STATES, RunState.NEEDS_HUMAN})


def terminal_count(run_ids: list[Any], states: frozenset[str] = TERMINAL_STATES) -> int:
    return Run.objects.filter(pk__in=run_ids, state__in=states).count()


def wait_for_all_to_end(
    run_ids: list[Any],
    *,
    timeout_s: float,
    what: str,
    meanwhile: Callable[[], object] | None = None,
    states: frozenset[str] = TERMINAL_STATES,
) -> None:
    """Poll until every run is in one of ``states`` (by default: has ended).

    ``meanwhile`` is called on every poll (a supervisor).
    """

    def ended() -> bool:
        if meanwhile is not None:
            meanwhile()
        return terminal_count(run_ids, states) == len(run_ids)

    wait_until(
        ended,
        timeout_s=timeout_s,
        what=what,
        describe=lambda: list(
            Run.objects.filter(pk__in=run_ids)
            .exclude(state__in=states)
            .values("id", "state", "next_seq", "lease_expires_at", "enqueued_at", "step_attempts")
        ),
    )


def assert_ended_cleanly(run_ids: list[Any], refunds_before: list[int]) -> list[Run]:
    """Every run ended with no gap or repeat in its steps, and every effect happened once.

    A refund is recorded under its issue_refund action's key, a cancellation's refund
    under "<cancel key>:refund", replies and hand-offs under their actions' keys.
    """
    runs = list(Run.objects.filter(pk__in=run_ids))
    unsuccessful = [r for r in runs if r.state != RunState.SUCCEEDED]
    assert all(r.error and r.error["class"] for r in unsuccessful), [r.error for r in unsuccessful]
    for run in runs:
        seqs = list(run.steps.order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(run.next_seq)), f"steps of {run.id} are {seqs}"
    succeeded = Action.objects.filter(run__in=run_ids, status=ActionStatus.SUCCEEDED)
    expected_refund_keys = {a.idempotency_key for a in succeeded.filter(tool="issue_refund")} | {
        f"{a.idempotency_key}:refund"
        for a in succeeded.filter(tool="cancel_order")
        if a.result["refunded_amount"] != "0.00"
    }
    new_refunds = Refund.objects.order_by().exclude(pk__in=refunds_before)
    assert sorted(new_refunds.values_list("idempotency_key", flat=True)) == sorted(
        expected_refund_keys
    )
    for model, tool in ((Reply, "send_reply"), (Handoff, "handoff_to_human")):
        keys = set(succeeded.filter(tool=tool).values_list("idempotency_key", flat=True))
        written = set(
            model.objects.filter(idempotency_key__in=keys).values_list("idempotency_key", flat=True)
        )
        assert written == keys
        written_by_runs = model.objects.filter(idempotency_key__regex=r"^[0-9a-f-]{36}:")
        assert written_by_runs.count() == len(keys)
    duplicated = Refund.objects.values("idempotency_key").annotate(n=Count("id")).filter(n__gt=1)
    assert list(duplicated) == []
    assert not Action.objects.filter(run__in=run_ids, status=ActionStatus.EXECUTING).exists()
    return runs


def simulated_usage(run: Run, step: Step) -> tuple[int, int]:
    """(tokens in, tokens out) that the simulator reported for a model step's call.

    It counts about four characters a token (runs.simulator.protocol): of the request, the
    conversation the step sent (stored in wire form in the run's checkpoint, its first
    ``step.state["messages"]`` messages) with the agent's tools, and of the reply, the
    assistant message that follows them there, or the final answer.
    """
    conversation = run.checkpoint["messages"]
    sent = step.state["messages"]
    tools = [tool.openai_schema() for tool in agent_get(run.agent_name).tools]
    if step.action["type"] == "final_answer":
        reply = step.outcome["content"]
    else:
        message = conversation[sent]
        reply = (message["content"] or "") + "".join(
            call["function"]["name"] + call["function"]["arguments"]
            for call in message["tool_calls"]
        )
    return estimate_tokens(canonical_json([conversation[:sent], tools])), estimate_tokens(reply)
