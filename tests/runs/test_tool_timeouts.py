"""A tool that does not answer in time: timed out, retried under the same key, then reported.

Outside a transaction (``transaction=True``), so tool calls run on the tool thread pool
where their timeout is enforced, as in a worker.
"""

from __future__ import annotations

import pytest

from examples.support.seed import seed_shop
from runs import services
from runs.models import Action, ActionStatus
from tests.processes import Simulator
from tests.runs import agents as test_agents
from tests.runs.factories import drive, seeded_ticket_input

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("use_test_agents")]


def test_a_slow_tool_times_out_is_retried_under_its_key_then_reported(
    model_endpoint: Simulator,
) -> None:
    seed_shop()
    test_agents.SLOW_CALLS.clear()
    run, _ = services.run_submit(agent_name="slow", run_input=seeded_ticket_input("T-0002"))

    run = drive(run)

    trail = [(s.kind, s.error_class, s.attempt) for s in run.steps.order_by("seq")]
    assert trail[:4] == [
        ("model", "", 1),
        ("tool", "tool_timeout", 1),
        ("tool", "tool_timeout", 2),
        ("tool", "tool_timeout", 3),
    ]
    action = Action.objects.get(run=run, proposed_seq=0)
    assert (action.status, action.error_class) == (ActionStatus.FAILED, "tool_timeout")
    assert action.result["error"]["message"] == "lookup_order did not answer within 0.2 s"
    # Every attempt ran under the action's one idempotency key.
    assert test_agents.SLOW_CALLS[:3] == [action.idempotency_key] * 3
    assert run.is_terminal
