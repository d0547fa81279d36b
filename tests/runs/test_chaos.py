"""Failure as the expected path: mixed model faults, and Redis lost in the middle of runs.

The Redis that is lost is a private one (tests.processes.PrivateRedis), never the shared one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from agents import registry
from examples.support.models import Refund, Ticket
from examples.support.seed import seed_shop
from reviews.models import ApprovalRequest, RequestState
from runs import services
from runs.models import TERMINAL_STATES, CircuitBreaker, Run, RunState, Step
from tests.conftest import wait_until
from tests.processes import PrivateRedis, Simulator, WorkerPool
from tests.runs.checks import RESTING_STATES, assert_ended_cleanly, wait_for_all_to_end
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
    wait_for_all_to_end(
        run_ids, timeout_s=600, what="200 runs under chaos to end", states=RESTING_STATES
    )

    runs = assert_ended_cleanly(run_ids, refunds_before)
    states = Counter(run.state for run in runs)
    # A run that a fault kept from its job (its reply or hand-off could not be filed)
    # is not a success: it waits for a person, on exactly one request. The budget is a
    # share, not a count: which runs meet which fault is drawn from each conversation's
    # text, which holds ids and times of this session (refund ids, sent_at), and from the
    # retries' timing, so how many are dead-lettered differs from one session to the next.
    assert states[RunState.SUCCEEDED] + states[RunState.NEEDS_HUMAN] >= 198, states
    assert set(states) <= {RunState.SUCCEEDED, RunState.DEAD_LETTERED, RunState.NEEDS_HUMAN}
    parked = [run for run in runs if run.state == RunState.NEEDS_HUMAN]
    assert {(run.error or {}).get("class") for run in parked} <= {
        "verification_failed",
        "handoff_failed",
    }
    assert [
        ApprovalRequest.objects.filter(run=run, state=RequestState.PENDING).count()
        for run in parked
    ] == [1] * len(parked)
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


@pytest.fixture
def private_broker(worker_env: dict[str, str]) -> Iterator[PrivateRedis]:
    """A Redis of this test's own as the broker of its workers and of this process.

    The test stops and restarts it: the machine's shared Redis, which other test sessions
    and a running demo use, is never touched. Requested before ``workers``, it outlives
    them (pytest tears fixtures down in reverse), so the workers stop against a live broker.
    """
    from agentdesk.celery import app

    server = PrivateRedis().start()
    worker_env["REDIS_URL"] = server.url()  # the dict the workers fixture starts them with
    shared = app.conf.broker_url
    _use_broker(app, server.url())
    try:
        yield server
    finally:
        _use_broker(app, shared)
        server.stop()


def _use_broker(app: Any, url: str) -> None:
    """Send this process's tasks to ``url`` from now on.

    Celery keeps the connection and producer pools of the broker it first used, in kombu's
    registry of pools: every pool is closed and forgotten (``kombu.pools.reset``), and the
    app's references to them dropped, as Celery itself does after a fork.
    """
    from kombu import pools

    app.conf.broker_url = url
    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


def test_runs_go_on_after_redis_restarts(
    private_broker: PrivateRedis, workers: WorkerPool, model_endpoint: Simulator
) -> None:
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

    private_broker.stop()
    under_way = list(
        Run.objects.filter(pk__in=run_ids)
        .exclude(state__in=TERMINAL_STATES)
        .values_list("pk", flat=True)
    )
    time.sleep(3)  # down long enough for every worker to lose its connection
    private_broker.start()  # empty, on the same port

    # A worker that Celery stopped on the lost connection is started again, as its
    # supervisor would (docs/deployment.md); the runs must go on all the same.
    wait_for_all_to_end(
        run_ids,
        timeout_s=240,
        what="every run to end after Redis came back",
        meanwhile=workers.revive,
    )
    runs = assert_ended_cleanly(run_ids, refunds_before)
    # How many runs were under way when Redis stopped depends on scheduling; that some
    # were is the test's premise (each of them then had steps left to take after it).
    assert under_way, "every run had ended before Redis stopped: nothing was tested"
    assert [run.state for run in runs] == [RunState.SUCCEEDED] * 20, Counter(r.state for r in runs)


def test_a_failing_tool_opens_its_breaker_for_every_worker_and_recovery_closes_it(
    workers: WorkerPool, model_endpoint: Simulator, settings: Any, tmp_path: Any
) -> None:
    """Two worker processes; the tool fails in both, both then see its breaker open."""
    flag = tmp_path / "outage"
    flag.touch()
    settings.AGENTDESK_AGENTS = [*settings.AGENTDESK_AGENTS, "tests.runs.agents.flaky"]
    registry.agents.cache_clear()
    workers.env.update(
        AGENTDESK_AGENTS=",".join(settings.AGENTDESK_AGENTS),
        AGENTDESK_TEST_FLAKY_FLAG=str(flag),
        AGENTDESK_RETRY_ATTEMPTS="1",
        AGENTDESK_BREAKER_FAILURES="3",
        AGENTDESK_BREAKER_COOLDOWN_S="2",
    )
    seed_shop()
    workers.start(2, concurrency=1)
    try:
        outage = [
            services.run_submit(agent_name="flaky", run_input=seeded_ticket_input(t))[0].pk
            for t in [f"T-{n:04d}" for n in range(1, 13)]
        ]
        wait_for_all_to_end(outage, timeout_s=120, what="the runs during the outage to end")
        tool_errors = Counter(
            Step.objects.filter(
                run__in=outage, kind="tool", action__tool="lookup_order"
            ).values_list("error_class", flat=True)
        )
        # One lookup a run, and none succeeds: it crashes or the open breaker refuses it
        # (the run then hands off). The breaker opens at the third failure; the other
        # worker may be mid-call then, so which of the two it is depends on scheduling.
        assert set(tool_errors) == {"tool_crashed", "circuit_open"}, tool_errors
        assert tool_errors.total() == len(outage), tool_errors
        assert tool_errors["tool_crashed"] in (3, 4), tool_errors
        assert CircuitBreaker.objects.get(name="tool:lookup_order").state == "open"
        logs = [path.read_text() for path in sorted(workers.log_dir.glob("worker-*.log"))]
        assert all("tool lookup_order failed: circuit_open" in log for log in logs), (
            "each worker process should have met the open breaker"
        )

        flag.unlink()
        time.sleep(2.5)  # the cooldown
        after = services.run_submit(agent_name="flaky", run_input=seeded_ticket_input("T-0001"))[
            0
        ].pk
        wait_for_all_to_end([after], timeout_s=60, what="a run after the recovery to end")
        assert CircuitBreaker.objects.get(name="tool:lookup_order").state == "closed"
        assert list(
            Step.objects.filter(run=after, kind="tool", action__tool="lookup_order").values_list(
                "error_class", flat=True
            )
        ) == [""]
    finally:
        registry.agents.cache_clear()
