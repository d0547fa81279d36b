"""A worker killed mid-step: its step redone within 30 s, and nothing repeated (a count).

What: how long a step whose worker died waits before another worker takes it up again,
with the production defaults (a 20 s lease renewed every 5 s while the step is alive, the
stalled-run sweeper every 5 s; runs.kernel.leases), and whether anything was done twice.

How:

1. A fresh bench database with the demo shop; a model simulator with ``--latency-ms``
   (2 s) per call, so that every step is in the middle of a model call most of the time;
   two worker processes (threads pool) and one beat process of its own, as in production
   (docs/deployment.md), so that killing a worker does not kill the sweeper.
2. Each of ``--rounds`` rounds submits ``--runs`` runs, waits until every one of them has a
   step under way, notes each run's lease (token, step) and SIGKILLs the first worker's
   process group, as when its host dies.
3. A run whose step was the dead worker's keeps that step number while its lease token
   changes to a new one: another worker has claimed the step again. The time from the
   kill to that claim is the figure, one per lost step. (Runs of the surviving worker move
   on to their next step and are not counted.) The dead worker is then started again and
   the round waits for its runs to end or park for a reviewer.
4. At the end: steps recorded twice (the unique (run, seq) makes this 0 unless the
   constraint is gone), effects written twice (refunds, replies, hand-offs under one key),
   and model calls answered more often than model steps were recorded (a live step taken
   over by another worker would make one more).

The budget is a count: the share of lost steps redone within 30 s (1.0) and 0 repeats;
the times are reported beside it. Run: ``.venv/bin/python bench/worker_kill.py``. One JSON
line on stdout.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from typing import Any

import harness

BUDGET_S = 30.0
PROCESSES = 2
CONCURRENCY = 20


def submit(count: int) -> list[str]:
    from examples.support.models import Ticket
    from runs import services

    tickets = list(Ticket.objects.order_by("ticket_id")[:count])
    return [
        str(
            services.run_submit(
                agent_name="support",
                run_input={
                    "ticket_id": t.ticket_id,
                    "customer_email": t.customer_email,
                    "subject": t.subject,
                    "body": t.body,
                },
            )[0].pk
        )
        for t in tickets
    ]


def leases(run_ids: list[str]) -> dict[str, tuple[Any, int]]:
    from runs.models import Run, RunState

    return {
        str(pk): (token, seq)
        for pk, token, seq in Run.objects.filter(
            pk__in=run_ids, state=RunState.RUNNING, lease_token__isnull=False
        ).values_list("pk", "lease_token", "next_seq")
    }


def wait_all_leased(run_ids: list[str], timeout_s: float) -> dict[str, tuple[Any, int]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = leases(run_ids)
        if len(held) == len(run_ids):
            return held
        time.sleep(0.1)
    raise RuntimeError("the runs did not all get under way")


def watch_recovery(
    held: dict[str, tuple[Any, int]], killed_at: float, timeout_s: float
) -> dict[str, float]:
    """Seconds from the kill to the re-claim of each step the dead worker held."""
    from runs.models import Run

    recovered: dict[str, float] = {}
    moved_on: set[str] = set()
    deadline = killed_at + timeout_s
    while time.monotonic() < deadline and len(recovered) + len(moved_on) < len(held):
        now = time.monotonic()
        for pk, token, seq in Run.objects.filter(pk__in=list(held)).values_list(
            "pk", "lease_token", "next_seq"
        ):
            pk = str(pk)
            if pk in recovered or pk in moved_on:
                continue
            old_token, old_seq = held[pk]
            if seq != old_seq:
                moved_on.add(pk)  # a live worker's step: it committed
            elif token is not None and token != old_token:
                recovered[pk] = now - killed_at
        time.sleep(0.1)
    lost = set(held) - moved_on
    missing = lost - set(recovered)
    for pk in missing:
        recovered[pk] = float("inf")  # never redone within the watch
    return recovered


def wait_settled(run_ids: list[str], timeout_s: float) -> None:
    from runs.models import Run, RunState

    deadline = time.monotonic() + timeout_s
    while Run.objects.filter(pk__in=run_ids, state=RunState.RUNNING).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("runs did not end or park in time")
        time.sleep(0.5)


def repeats(run_ids: list[str], sim: harness.Simulator) -> dict[str, int]:
    from django.db.models import Count

    from examples.support.models import Handoff, Refund, Reply
    from runs.models import Step

    twice = 0
    for model in (Refund, Reply, Handoff):
        twice += (
            model.objects.values("idempotency_key").annotate(n=Count("id")).filter(n__gt=1).count()
        )
    steps_twice = (
        Step.objects.filter(run__in=run_ids)
        .values("run", "seq")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    model_steps = Step.objects.filter(run__in=run_ids, kind="model").count()
    # Answered calls: the simulator counts a request once its answer is sent, so a call a
    # kill cut off is not counted, and a step redone after it is counted once.
    answered = int(sim.stats()["requests"])
    return {
        "effects_written_twice": twice,
        "steps_recorded_twice": steps_twice,
        "model_calls_answered_beyond_steps": max(answered - model_steps, 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=12, help="runs per round")
    parser.add_argument("--latency-ms", type=int, default=2000)
    args = parser.parse_args()

    harness.note("worker_kill: preparing the bench database")
    harness.prepare_database()
    times: list[float] = []
    all_runs: list[str] = []
    with harness.simulator(latency_ms=args.latency_ms) as sim:
        harness.django_setup(AGENTDESK_LLM_BASE_URL=sim.base_url)
        from django.conf import settings

        env = harness.bench_env(AGENTDESK_LLM_BASE_URL=sim.base_url)
        workers = harness.workers(env)
        workers.start_beat()
        try:
            workers.start(PROCESSES, pool="threads", concurrency=CONCURRENCY)
            for round_ in range(args.rounds):
                run_ids = submit(args.runs)
                all_runs += run_ids
                held = wait_all_leased(run_ids, timeout_s=60)
                victim = workers.processes[0]
                os.killpg(victim.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                victim.wait()
                recovered = watch_recovery(held, killed_at, timeout_s=120)
                times += recovered.values()
                harness.note(
                    f"worker_kill: round {round_ + 1}: {len(recovered)} lost step(s), "
                    f"redone after {sorted(round(t, 1) for t in recovered.values())} s"
                )
                # The supervisor's part: the dead worker comes back for the next round.
                workers.revive()
                wait_settled(run_ids, timeout_s=240)
            counts = repeats(all_runs, sim)
        finally:
            workers.stop()  # the beat process too
            workers.cleanup()
            harness.flush_redis()
    within = sum(t <= BUDGET_S for t in times)
    harness.emit(
        {
            "bench": "worker_kill",
            "lost_steps": len(times),
            "redone_within_30s": within,
            "ratio_within_30s": round(within / len(times), 3) if times else None,
            "median_s": round(harness.median(times), 1),
            "max_s": round(max(times), 1) if times else None,
            **counts,
            "kills": args.rounds,
            "lease_s": settings.AGENTDESK_STEP_LEASE_S,
            "heartbeat_s": settings.AGENTDESK_STEP_HEARTBEAT_S,
            "sweep_s": settings.AGENTDESK_RECOVERY_INTERVAL_S,
            "latency_ms": args.latency_ms,
            "processes": PROCESSES,
            "pool": "threads",
            "concurrency": CONCURRENCY,
        }
    )


if __name__ == "__main__":
    main()
