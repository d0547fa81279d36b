"""Runs in flight on one 2-core worker host with 1 s model latency (budget: >= 200).

What: how many runs a worker host keeps moving at once when every model call takes a
second, how many steps per second that makes, and how many PostgreSQL connections it
costs, for a given Celery pool, concurrency and number of worker processes.

How:

1. A fresh bench database with the demo shop; a model simulator with a fixed latency
   (``--latency-ms``, 1000) and no faults; K Celery worker processes on the bench queue
   (``--pool``, ``--concurrency``, ``--processes``; no beat).
2. M runs of the example agent on the seeded tickets are submitted at once (``--runs``;
   by default 400, or 1.25 x the worker slots when that is more, so the workers never
   run dry), and topped up every half second as runs end, so M runs stay active.
3. After ``--warm-up`` seconds, every 0.2 s for ``--window`` seconds: the simulator's
   in-flight requests (model calls under way), the runs holding a step lease (mid-step:
   a model or tool call, or its recording), the runs in state running (started, not
   ended: includes runs whose next step waits on the broker) and the worker processes'
   PostgreSQL connections (pg_stat_activity, by application name).
4. Steps per second = steps recorded in the window / its length. Also from the step
   records: the median time a model step spends beyond the model's latency between its
   start (after the claim) and its record (before the commit), i.e. orchestration under
   load plus any wait for a CPU, the GIL or a database connection; every error class
   seen; and the CPU time the worker processes used per step.

``runs_in_flight`` is the median number of model calls in flight at the simulator: runs
that are waiting on the model right now, the strict reading of "in flight". With 1 s of
model latency it can only be as high as the model steps the host finishes per second.
``runs_mid_step_median`` (also counting runs whose step waits for a CPU, a database
connection or a tool) and ``runs_running_median`` (also counting runs between two steps,
waiting on the broker) are reported next to it; both are larger, and both grow with the
worker slots and the runs submitted without any more work getting done, so neither is the
figure held against the budget. ``runs_in_flight_mean`` is the time average of the same
samples (by Little's law, model calls per second times the latency); when the calls come in
waves, as they do once the workers run out of CPU, it is above the median.
``worker_host_estimate`` is derived, not measured: the runs in flight two cores running only
workers would keep at the measured worker CPU per model call (see ``_worker_host_estimate``).

``--pin-workers N`` measures workers on CPUs of their own, as on a worker host: the
workers on the machine's last N CPUs, and this driver, the simulator, PostgreSQL and Redis
on the others (``harness.pinned``; they are put back on every CPU afterwards). On a 2-core
machine, ``--pin-workers 1`` gives the workers one whole core; ``pinned_2_core_host`` is
what they kept in flight scaled to two such cores (worker processes share nothing but the
database and the broker, which are elsewhere on a worker host). It is a lower bound when
the other CPUs, with everything else on them, are the ones that run out
(``cores_used``).

Run: ``.venv/bin/python bench/in_flight.py`` for the recommended configuration, or
``--sweep`` for the table of alternatives in docs/concurrency.md (about 12 minutes).
``--pool``, ``--concurrency``, ``--processes`` and ``--db-pool-max`` also take
comma-separated lists (every combination is measured), and ``--repeat N`` measures each
configuration N times, taking them in turn, since one measurement on a shared machine
proves little. Prints one JSON line per measurement on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import harness

# The recommended worker configuration for a 2-core host (docs/concurrency.md).
POOL = "threads"
CONCURRENCY = 150
PROCESSES = 2
DB_POOL_MAX = 20

WORKER_APP = "agentdesk-bench-worker"
DRIVER_APP = "agentdesk-bench-driver"


@dataclass(frozen=True)
class Config:
    pool: str
    concurrency: int
    processes: int
    db_pool_max: int = DB_POOL_MAX

    @property
    def slots(self) -> int:
        return self.concurrency * self.processes


def sweep_configs() -> list[Config]:
    """The alternatives measured for docs/concurrency.md."""
    # Prefork: one worker process with N pool children, a step at a time in each.
    configs = [Config("prefork", c, 1) for c in (2, 4, 8)]
    # Threads: as many worker processes as cores, more or fewer threads, a smaller pool.
    configs += [Config("threads", c, PROCESSES) for c in (50, 300)]
    configs += [Config(POOL, CONCURRENCY, PROCESSES, db_pool_max=10)]
    # The recommended configuration, and with fewer and more processes.
    configs += [Config(POOL, CONCURRENCY, k) for k in (1, PROCESSES, 4)]
    try:
        import gevent  # noqa: F401
    except ImportError:
        harness.note("in_flight: gevent is not installed; not measured")
    else:
        configs += [Config("gevent", c, 1) for c in (200, 500)]
    return configs


class Probe:
    """One connection of its own that samples the bench database."""

    def __init__(self) -> None:
        import psycopg

        self.conn = psycopg.connect(harness.DATABASE_URL, autocommit=True)

    def sample(self) -> tuple[int, int, int]:
        row = self.conn.execute(
            """
            SELECT
              (SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = %s),
              (SELECT count(*) FROM runs_run
                WHERE state = 'running' AND lease_token IS NOT NULL),
              (SELECT count(*) FROM runs_run WHERE state = 'running')
            """,
            (WORKER_APP,),
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    def close(self) -> None:
        self.conn.close()


class Feeder:
    """Keeps ``target`` runs of the example agent active (queued or running)."""

    def __init__(self, target: int) -> None:
        from examples.support.models import Ticket

        self.target = target
        self.submitted = 0
        self.since = datetime.now(UTC)
        self.tickets = [
            {
                "ticket_id": t.ticket_id,
                "customer_email": t.customer_email,
                "subject": t.subject,
                "body": t.body,
            }
            for t in Ticket.objects.order_by("ticket_id")
        ]

    def top_up(self) -> None:
        from runs import services
        from runs.models import ACTIVE_STATES, Run

        deficit = self.target - Run.objects.filter(state__in=ACTIVE_STATES).count()
        for _ in range(max(deficit, 0)):
            ticket = self.tickets[self.submitted % len(self.tickets)]
            services.run_submit(agent_name="support", run_input=ticket)
            self.submitted += 1

    def run_states(self) -> dict[str, int]:
        """How the runs submitted for this configuration stand."""
        from django.db.models import Count

        from runs.models import Run

        return dict(
            Run.objects.filter(created_at__gte=self.since)
            .values_list("state")
            .annotate(n=Count("id"))
            .values_list("state", "n")
        )

    def stop(self) -> None:
        """Cancel what is left, so that the next configuration starts from nothing."""
        from runs.models import ACTIVE_STATES, Run, RunState

        Run.objects.filter(state__in=ACTIVE_STATES).update(
            state=RunState.CANCELLED, lease_token=None, lease_expires_at=None
        )


def step_figures(start: datetime, end: datetime, latency_ms: int) -> dict[str, Any]:
    """Steps recorded in the window: how many, how long beyond the model, which errors."""
    from django.db.models import Count

    from runs.models import Step, StepKind

    window = Step.objects.filter(finished_at__gte=start, finished_at__lt=end)
    model = window.filter(kind=StepKind.MODEL, status="ok").values_list("started_at", "finished_at")
    beyond_ms = [(f - s).total_seconds() * 1000 - latency_ms for s, f in model]
    errors = dict(
        window.exclude(error_class="")
        .values_list("error_class")
        .annotate(n=Count("id"))
        .values_list("error_class", "n")
    )
    return {
        "steps": window.count(),
        "model_steps": window.filter(kind=StepKind.MODEL).count(),
        "beyond_model_ms": round(harness.median(beyond_ms), 1) if beyond_ms else None,
        "beyond_model_p95_ms": round(harness.percentile(beyond_ms, 95), 1) if beyond_ms else None,
        "step_errors": errors,
    }


LOG_TROUBLE = re.compile(r"PoolTimeout|OperationalError|Traceback|too many clients|CRITICAL")


def measure(
    config: Config,
    sim: harness.Simulator,
    *,
    worker_cpus: set[int] | None,
    runs: int | None,
    warm_up_s: float,
    window_s: float,
    latency_ms: int,
) -> dict[str, Any]:
    """Start the workers, keep M runs active, sample a window, stop the workers."""
    feeder = Feeder(runs or max(400, round(config.slots * 1.25)))
    workers = harness.workers(
        harness.bench_env(
            AGENTDESK_LLM_BASE_URL=sim.base_url,
            AGENTDESK_DB_POOL_MAX=str(config.db_pool_max),
            PGAPPNAME=WORKER_APP,
        ),
        cpus=worker_cpus,
    )
    probe = Probe()
    harness.note(f"in_flight: {config} with {feeder.target} active runs")
    try:
        feeder.top_up()
        workers.start(config.processes, pool=config.pool, concurrency=config.concurrency)
        assert sim.process is not None
        groups = [p.pid for p in workers.processes]
        cpu = harness.CpuMeter(workers=groups, simulator=sim.process.pid)
        sampler = harness.Sampler(lambda: (sim.stats()["in_flight"], *probe.sample()))
        deadline = time.monotonic() + warm_up_s + window_s
        window_at = time.monotonic() + warm_up_s
        while time.monotonic() < deadline:
            if not workers.alive():
                raise RuntimeError(f"a worker exited early:\n{workers.logs()[-4000:]}")
            if not sampler.is_alive() and time.monotonic() >= window_at:
                window_start, cpu_before = datetime.now(UTC), cpu.snapshot()
                sampler.start()
            feeder.top_up()
            time.sleep(0.5)
        window_end = datetime.now(UTC)
        cores = cpu.cores_used(cpu_before, cpu.snapshot())
        memory_mb = harness.rss_mb(groups)
        samples = sampler.stop()
    finally:
        workers.stop()
        probe.close()
    trouble = [line for line in workers.logs().splitlines() if LOG_TROUBLE.search(line)]
    workers.cleanup()
    harness.flush_redis()
    states = feeder.run_states()
    feeder.stop()
    sim.reset()

    model_calls, pg, mid_step, running = (list(column) for column in zip(*samples, strict=True))
    length_s = (window_end - window_start).total_seconds()
    steps = step_figures(window_start, window_end, latency_ms)
    return {
        "bench": "in_flight",
        "runs_in_flight": round(harness.median(model_calls)),
        "steps_per_s": round(steps["steps"] / length_s, 1),
        "model_latency_s": latency_ms / 1000,
        "pool": config.pool,
        "processes": config.processes,
        "concurrency": config.concurrency,
        "pg_connections_peak": max(pg),
        "runs_in_flight_mean": round(statistics.fmean(model_calls), 1),
        "runs_in_flight_max": max(model_calls),
        "runs_mid_step_median": round(harness.median(mid_step)),
        "runs_running_median": round(harness.median(running)),
        "model_steps_per_s": round(steps["model_steps"] / length_s, 1),
        "beyond_model_ms": steps["beyond_model_ms"],
        "beyond_model_p95_ms": steps["beyond_model_p95_ms"],
        "worker_cpu_ms_per_step": round(cores["workers"] * 1000 * length_s / steps["steps"], 1)
        if steps["steps"]
        else None,
        "worker_host_estimate": _worker_host_estimate(cores, steps, length_s, latency_ms),
        "worker_cpus": sorted(worker_cpus) if worker_cpus else None,
        # Pinned: what the workers' own CPUs kept in flight, scaled to a host of 2 cores.
        "pinned_2_core_host": round(harness.median(model_calls) * 2 / len(worker_cpus))
        if worker_cpus
        else None,
        "cores_used": cores,
        "workers_rss_mb": memory_mb,
        "db_pool_max": config.db_pool_max,
        "active_runs": feeder.target,
        "window_s": round(length_s),
        "step_errors": steps["step_errors"],
        "run_states": states,
        "worker_log_trouble": len(trouble),
        "worker_log_sample": trouble[:5],
    }


def _worker_host_estimate(
    cores: dict[str, float], steps: dict[str, Any], length_s: float, latency_ms: int
) -> int | None:
    """Runs in flight a host running only workers, with two cores, could keep: an estimate.

    Here PostgreSQL, Redis, the simulator and this driver share the two cores with the
    workers; in a deployment they are elsewhere. The workers' CPU per model call (every
    step counted: the tool steps between model calls too) gives the model calls two cores
    can carry per second, and each call is in flight for the model's latency (Little's
    law). A derived figure, reported beside the measured one, never instead of it: it
    assumes the workers scale to both cores, which the 1/2/4-process runs only roughly bear
    out.
    """
    if not steps["model_steps"]:
        return None
    worker_cpu_s_per_model_call = cores["workers"] * length_s / steps["model_steps"]
    return round(2 / worker_cpu_s_per_model_call * latency_ms / 1000)


def _list(cast: Any) -> Any:
    """An argparse type: one value or a comma-separated list of them."""
    return lambda text: [cast(item) for item in text.split(",") if item.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=_list(str), default=[POOL])
    parser.add_argument("--concurrency", type=_list(int), default=[CONCURRENCY])
    parser.add_argument("--processes", type=_list(int), default=[PROCESSES])
    parser.add_argument("--db-pool-max", type=_list(int), default=[DB_POOL_MAX])
    parser.add_argument("--runs", type=int, default=None, help="active runs (M)")
    parser.add_argument("--latency-ms", type=int, default=1000)
    parser.add_argument("--warm-up", type=float, default=None, help="seconds; 20, sweep 10")
    parser.add_argument("--window", type=float, default=None, help="seconds; 60, sweep 30")
    parser.add_argument("--sweep", action="store_true", help="measure the alternatives")
    parser.add_argument("--repeat", type=int, default=1, help="measure each configuration N times")
    parser.add_argument(
        "--pin-workers",
        type=int,
        default=0,
        metavar="N",
        help="workers on the last N CPUs only; this driver, the simulator, PostgreSQL and "
        "Redis on the others (harness.pinned)",
    )
    args = parser.parse_args()

    if args.sweep:
        configs = sweep_configs()
        warm_up_s, window_s = args.warm_up or 10, args.window or 30
    else:
        configs = [
            Config(pool, concurrency, processes, db_pool_max)
            for pool, concurrency, processes, db_pool_max in itertools.product(
                args.pool, args.concurrency, args.processes, args.db_pool_max
            )
        ]
        warm_up_s, window_s = args.warm_up or 20, args.window or 60
    # In turn (A B C A B C), so that a burst of load from elsewhere on the machine does
    # not land on every measurement of one configuration.
    configs = configs * max(args.repeat, 1)

    cpus = sorted(os.sched_getaffinity(0))
    worker_cpus = set(cpus[-args.pin_workers :]) if args.pin_workers else None
    if worker_cpus is not None and len(worker_cpus) >= len(cpus):
        parser.error(f"--pin-workers must leave a CPU for the rest (this machine has {len(cpus)})")

    harness.note("in_flight: preparing the bench database")
    harness.prepare_database()
    with (
        harness.pinned(set(cpus) - worker_cpus) if worker_cpus else contextlib.nullcontext(),
        harness.simulator(latency_ms=args.latency_ms) as sim,
    ):
        harness.django_setup(AGENTDESK_LLM_BASE_URL=sim.base_url, PGAPPNAME=DRIVER_APP)
        for config in configs:
            harness.emit(
                measure(
                    config,
                    sim,
                    worker_cpus=worker_cpus,
                    runs=args.runs,
                    warm_up_s=warm_up_s,
                    window_s=window_s,
                    latency_ms=args.latency_ms,
                )
            )


if __name__ == "__main__":
    main()
