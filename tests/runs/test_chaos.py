"""Failure as the expected path: mixed model faults, and Redis lost in the middle of runs."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from typing import Any

import pytest

from examples.support.models import Refund, Ticket
from examples.support.seed import seed_shop
from runs import services
from runs.models import RunState, Step
from tests.conftest import wait_until
from tests.processes import ROOT, Simulator, WorkerPool
from tests.runs.checks import assert_ended_cleanly, wait_for_all_to_end
from tests.runs.factories import seeded_ticket_input

pytestmark = pytest.mark.slow

FAULT_KINDS = (
    "rate_limit_rate",
    "server_error_rate",
    "hang_rate",
    "malformed_json_rate",
    "unknown_tool_rate",
    "refusal_rate",
    "schema_invalid_rate",
)


def _submit_tickets(count: int) -> list[Any]:
    tickets = list(Ticket.objects.order_by("ticket_id").values_list("ticket_id", flat=True))
    return [
        services.run_submit(
            agent_name="support", run_input=seeded_ticket_input(tickets[i % len(tickets)])
        )[0].pk
        for i in range(count)
    ]


def test_chaos_twenty_percent_mixed_faults_over_200_runs(
    workers: WorkerPool, model_endpoint: Simulator
) -> None:
    """At least 99% complete; the rest end with a structured error; nothing runs twice."""
    seed_shop()
    refunds_before = list(Refund.objects.values_list("pk", flat=True))
    model_endpoint.configure(
        **{kind: 0.2 / len(FAULT_KINDS) for kind in FAULT_KINDS}, hang_s=5, retry_after_s=1
    )
    workers.env.update(AGENTDESK_RETRY_MAX_WAIT_S="2", AGENTDESK_LLM_TIMEOUT_S="1.5")
    workers.start(2, concurrency=4, beat=True)

    run_ids = _submit_tickets(200)
    wait_for_all_to_end(run_ids, timeout_s=600, what="200 runs under chaos to end")

    runs = assert_ended_cleanly(run_ids, refunds_before)
    states = Counter(run.state for run in runs)
    assert states[RunState.SUCCEEDED] >= 198, states
    assert set(states) <= {RunState.SUCCEEDED, RunState.DEAD_LETTERED}, states
    faults = Counter(
        Step.objects.filter(run__in=run_ids)
        .exclude(error_class="")
        .values_list("error_class", flat=True)
    )
    # The faults really happened, and each was classified.
    assert {
        "model_rate_limited",
        "model_server_error",
        "model_timeout",
        "model_refusal",
        "tool_args_invalid",
        "tool_unknown",
    } <= set(faults), faults
    logs = workers.logs()
    assert "Traceback" not in logs
    assert " ERROR " not in logs


def _redis(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", "6379", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_runs_go_on_after_redis_restarts(workers: WorkerPool, model_endpoint: Simulator) -> None:
    """Redis holds messages only: restarted empty mid-run, it loses no run and no step."""
    seed_shop()
    refunds_before = list(Refund.objects.values_list("pk", flat=True))
    model_endpoint.configure(latency_ms=150)
    workers.start(1, concurrency=4, beat=True)
    run_ids = _submit_tickets(20)
    wait_until(
        lambda: Step.objects.filter(run__in=run_ids).count() >= 20,
        timeout_s=60,
        what="the runs to be under way",
    )

    _redis("shutdown", "nosave")
    wait_until(lambda: _redis("ping").returncode != 0, timeout_s=10, what="Redis to stop")
    steps_while_down = Step.objects.filter(run__in=run_ids).count()
    time.sleep(3)
    subprocess.run([str(ROOT / ".ci" / "services")], check=True, timeout=60)

    wait_for_all_to_end(run_ids, timeout_s=240, what="every run to end after Redis came back")
    runs = assert_ended_cleanly(run_ids, refunds_before)
    assert Step.objects.filter(run__in=run_ids).count() > steps_while_down
    assert all(run.state == RunState.SUCCEEDED for run in runs), Counter(r.state for r in runs)
