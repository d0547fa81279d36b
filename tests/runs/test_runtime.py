"""The step loop, driven in this process against the simulator over HTTP.

Workers are not needed to test the loop itself: each test calls the step service the way
the Celery task does. tests/runs/test_workers.py runs the same loop in real workers.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from agentdesk.logging import TraceIdFilter
from agents.definition import ToolContext
from audit.models import AuditEvent
from examples.support.models import Refund
from examples.support.seed import seed_shop
from examples.support.tools import ISSUE_REFUND
from runs import services
from runs.gateway.pricing import model_call_cost
from runs.models import Action, ActionStatus, Run, RunState, Step, StepKind
from tests.processes import Simulator
from tests.runs.checks import simulated_usage
from tests.runs.factories import drive, seeded_ticket_input

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(db: None) -> None:
    seed_shop()


def _submit(ticket_id: str) -> Run:
    run, _ = services.run_submit(agent_name="support", run_input=seeded_ticket_input(ticket_id))
    return run


REFUND_TICKET = "T-0002"  # a damaged item: the agent looks up, checks policy, refunds, replies
# The example agent's primary model per task kind (examples/support/agent.py).
TIER_MODELS = {"routing": "gpt-4o-mini", "decision": "gpt-4o", "drafting": "gpt-4o-mini"}


def test_run_completes_and_every_step_is_recorded(shop: None, model_endpoint: Simulator) -> None:
    run = drive(_submit(REFUND_TICKET))

    assert run.state == RunState.SUCCEEDED
    assert run.output == "T-0002: refunded 52.80 EUR on SO-1002; replied to the customer."
    steps = list(run.steps.order_by("seq"))
    assert [s.seq for s in steps] == list(range(run.next_seq))
    assert steps[-1].kind == StepKind.MODEL
    assert steps[-1].action == {"type": "final_answer"}
    model_steps = [s for s in steps if s.kind == StepKind.MODEL]
    for step in model_steps:
        assert (step.tokens_in, step.tokens_out) == simulated_usage(run, step)
        assert step.cost_usd == model_call_cost(
            model=step.model, tokens_in=step.tokens_in, tokens_out=step.tokens_out
        )
        assert step.model == TIER_MODELS[step.state["task_kind"]]
        assert step.prompt_version == run.prompt_version
    assert run.tokens_in == sum(s.tokens_in for s in model_steps)
    assert run.tokens_out == sum(s.tokens_out for s in model_steps)
    assert run.cost_usd == sum(s.cost_usd for s in model_steps)
    tool_steps = [s for s in steps if s.kind == StepKind.TOOL]
    assert run.tool_calls == len(tool_steps)
    assert all(0 <= (s.confidence or 0) <= 1 and s.reason for s in tool_steps)
    assert [s.action["tool"] for s in tool_steps][-1] == "send_reply"
    assert list(
        AuditEvent.objects.filter(object_id=str(run.id))
        .order_by("id")
        .values_list("verb", flat=True)
    ) == ["run.submitted", "run.started", "run.succeeded"]


def test_refund_ticket_writes_one_refund_under_the_action_key(
    shop: None, model_endpoint: Simulator
) -> None:
    run = drive(_submit(REFUND_TICKET))

    refund_actions = Action.objects.filter(run=run, tool="issue_refund")
    assert [a.status for a in refund_actions] == [ActionStatus.SUCCEEDED]
    refund = Refund.objects.get(idempotency_key=refund_actions[0].idempotency_key)
    assert refund_actions[0].result == refund.result


def test_redelivered_step_task_repeats_nothing(shop: None, model_endpoint: Simulator) -> None:
    run = _submit(REFUND_TICKET)
    services.run_step_execute(run_id=str(run.id), seq=0)
    services.run_step_execute(run_id=str(run.id), seq=0)  # the same message again
    services.run_step_execute(run_id=str(run.id), seq=1)  # taken within step 0 (a read)
    services.run_step_execute(run_id=str(run.id), seq=5)  # a message from the future

    run.refresh_from_db()
    assert run.next_seq == 2  # the model step and the lookup it made at once
    assert Step.objects.filter(run=run).count() == 2


def test_a_live_lease_keeps_other_workers_out(shop: None, model_endpoint: Simulator) -> None:
    run = _submit(REFUND_TICKET)
    Run.objects.filter(pk=run.pk).update(
        state=RunState.RUNNING,
        lease_token="00000000-0000-0000-0000-000000000001",
        lease_expires_at=timezone.now() + timedelta(seconds=60),
    )

    services.run_step_execute(run_id=str(run.id), seq=0)
    assert Step.objects.filter(run=run).count() == 0

    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    services.run_step_execute(run_id=str(run.id), seq=0)
    assert Step.objects.filter(run=run).count() == 2  # the model step and its lookup


def test_tool_call_redone_after_a_crash_returns_the_stored_result(
    shop: None, model_endpoint: Simulator
) -> None:
    """A worker ran the refund, then died before recording the step; the redo must not pay twice."""
    run = _submit(REFUND_TICKET)
    while True:  # advance until the refund is the next thing to run
        services.run_step_execute(run_id=str(run.id), seq=run.next_seq)
        run.refresh_from_db()
        pending = run.checkpoint["pending_actions"]
        if pending and Action.objects.get(pk=pending[0]).tool == "issue_refund":
            break
        assert not run.is_terminal
    action = Action.objects.get(pk=run.checkpoint["pending_actions"][0])
    # What the dead worker did: the effect, under the action's key, and nothing else.
    first = ISSUE_REFUND.func(
        ISSUE_REFUND.input_schema.model_validate(action.arguments),
        ToolContext(
            run_id=str(run.id),
            trace_id=run.trace_id,
            idempotency_key=action.idempotency_key,
            input=run.input,
        ),
    )

    services.run_step_execute(run_id=str(run.id), seq=run.next_seq)

    action.refresh_from_db()
    assert Refund.objects.filter(order__order_id=action.arguments["order_id"]).count() == 1
    assert action.status == ActionStatus.SUCCEEDED
    assert action.result == json.loads(json.dumps(first))


def test_schema_invalid_tool_arguments_go_back_to_the_model(
    shop: None, model_endpoint: Simulator
) -> None:
    model_endpoint.configure(schema_invalid_rate=1.0)
    refunds_before = Refund.objects.count()
    run = _submit(REFUND_TICKET)

    services.run_step_execute(run_id=str(run.id), seq=0)
    services.run_step_execute(run_id=str(run.id), seq=1)

    run.refresh_from_db()
    step = run.steps.get(seq=1)
    assert step.kind == StepKind.TOOL
    assert step.error_class == "tool_args_invalid"
    assert step.outcome["error"]["class"] == "tool_args_invalid"
    assert step.outcome["error"]["details"]["errors"] != []
    tool_message = run.checkpoint["messages"][-1]
    assert tool_message["role"] == "tool"
    assert json.loads(tool_message["content"])["error"]["class"] == "tool_args_invalid"
    assert Action.objects.get(run=run).status == ActionStatus.FAILED
    assert run.state == RunState.RUNNING  # the agent goes on and may correct itself
    assert Refund.objects.count() == refunds_before


def test_malformed_tool_call_json_is_a_structured_tool_error(
    shop: None, model_endpoint: Simulator
) -> None:
    model_endpoint.configure(malformed_json_rate=1.0)
    run = _submit(REFUND_TICKET)

    services.run_step_execute(run_id=str(run.id), seq=0)
    services.run_step_execute(run_id=str(run.id), seq=1)

    step = Step.objects.get(run=run, seq=1)
    assert step.error_class == "tool_args_invalid"
    assert step.outcome["error"]["message"] == "the arguments are not a JSON object"


def test_unknown_tool_is_refused_without_running_anything(
    shop: None, model_endpoint: Simulator
) -> None:
    model_endpoint.configure(unknown_tool_rate=1.0)
    run = _submit(REFUND_TICKET)

    services.run_step_execute(run_id=str(run.id), seq=0)
    services.run_step_execute(run_id=str(run.id), seq=1)

    step = Step.objects.get(run=run, seq=1)
    assert step.error_class == "tool_unknown"
    assert step.outcome["error"]["message"].startswith("there is no tool named")


@pytest.mark.parametrize(
    ("knob", "error_class"),
    [
        ("server_error_rate", "model_server_error"),
        ("rate_limit_rate", "model_rate_limited"),
        ("refusal_rate", "model_refusal"),
    ],
)
def test_a_failing_model_is_classified_and_the_run_still_ends(
    shop: None, model_endpoint: Simulator, knob: str, error_class: str
) -> None:
    model_endpoint.configure(**{knob: 1.0})

    run = drive(_submit(REFUND_TICKET))

    first = run.steps.get(seq=0)
    assert (first.status, first.error_class) == ("error", error_class)
    assert first.outcome["error"]["class"] == error_class
    # tests/runs/test_resilience.py follows the fallback chain step by step.
    assert run.state == RunState.SUCCEEDED
    assert run.steps.order_by("seq").last().route == "rule"


def test_unreachable_model_endpoint_is_a_connection_error(shop: None, settings: Any) -> None:
    # The discard port: nothing listens there.
    settings.AGENTDESK_LLM_ENDPOINTS = {
        "default": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-test"}
    }

    run = drive(_submit(REFUND_TICKET))

    assert run.steps.get(seq=0).error_class == "model_connection_error"
    assert run.state == RunState.SUCCEEDED  # the rule-based fallback handed the ticket off
    assert run.steps.order_by("seq").last().route == "rule"


def test_every_log_line_of_a_run_carries_its_trace_id(
    shop: None, model_endpoint: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(TraceIdFilter())
    caplog.set_level(logging.INFO, logger="runs")

    run = drive(_submit(REFUND_TICKET))

    lines = [r for r in caplog.records if r.name.startswith("runs.")]
    assert len(lines) == 1 + run.next_seq + 1  # the submission, a line a step, the end
    assert {r.trace_id for r in lines} == {run.trace_id}


def test_stalled_runs_are_found_and_requeued(shop: None, model_endpoint: Simulator) -> None:
    lost = _submit(REFUND_TICKET)
    Run.objects.filter(pk=lost.pk).update(enqueued_at=timezone.now() - timedelta(hours=1))
    died = _submit(REFUND_TICKET)
    Run.objects.filter(pk=died.pk).update(
        state=RunState.RUNNING,
        lease_token="00000000-0000-0000-0000-000000000002",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    fresh = _submit(REFUND_TICKET)
    finished = drive(_submit(REFUND_TICKET))

    assert services.runs_recover_stalled() == 2

    assert Run.objects.get(pk=lost.pk).enqueued_at > timezone.now() - timedelta(seconds=5)
    assert Run.objects.get(pk=fresh.pk).enqueued_at == fresh.enqueued_at  # not stalled
    assert finished.state == RunState.SUCCEEDED
    assert services.runs_recover_stalled() == 0  # just re-enqueued: not stalled again yet


def test_every_action_is_audited_when_proposed_and_when_it_ends(
    shop: None, model_endpoint: Simulator
) -> None:
    run = drive(_submit(REFUND_TICKET))

    actions = list(Action.objects.filter(run=run).order_by("proposed_seq", "index"))
    events = list(
        AuditEvent.objects.filter(object_type="action")
        .order_by("seq")
        .values_list("verb", "object_id", "before", "after", "trace_id", "actor_label")
    )
    assert [a.tool for a in actions] == [
        "lookup_order",
        "search_refund_policy",
        "issue_refund",
        "send_reply",
    ]
    expected = []
    for action in actions:
        expected.append(("action.proposed", str(action.pk), None, "proposed"))
        expected.append(("action.succeeded", str(action.pk), {"status": "executing"}, "succeeded"))
    assert [
        (verb, object_id, before, after["status"])
        for verb, object_id, before, after, _, _ in events
    ] == expected
    assert {(trace, label) for *_, trace, label in events} == {(run.trace_id, "worker")}
    refund = next(a for a in actions if a.tool == "issue_refund")
    proposed = AuditEvent.objects.get(verb="action.proposed", object_id=str(refund.pk))
    assert proposed.after == {
        "status": "proposed",
        "tool": "issue_refund",
        "run": str(run.id),
        "step": refund.proposed_seq,
        "args_hash": refund.args_hash,
        "idempotency_key": refund.idempotency_key,
        "confidence": refund.confidence,
    }
    done = AuditEvent.objects.get(verb="action.succeeded", object_id=str(refund.pk))
    assert done.after == {
        "status": "succeeded",
        "tool": "issue_refund",
        "step": refund.step.seq,
        "error_class": "",
        "verdict": "execute",
        "policy_rule": "",
    }


def test_a_call_refused_before_it_runs_is_audited_from_proposed(
    shop: None, model_endpoint: Simulator
) -> None:
    run = _submit(REFUND_TICKET)
    # Up to the refund, the first call that is left to a tool step (the reads before it are
    # made within their model steps).
    while not (pending := run.checkpoint["pending_actions"]):
        services.run_step_execute(run_id=str(run.id), seq=run.next_seq)
        run.refresh_from_db()
    action = Action.objects.get(pk=pending[0])
    assert action.tool == "issue_refund"
    Action.objects.filter(pk=action.pk).update(tool="no_such_tool")

    services.run_step_execute(run_id=str(run.id), seq=run.next_seq)

    event = AuditEvent.objects.get(object_type="action", verb__startswith="action.f")
    assert (event.verb, event.before, event.after["error_class"]) == (
        "action.failed",
        {"status": "proposed"},
        "tool_unknown",
    )
