"""From a decision's commit to the run's next step starting (budget: <= 100 ms median).

What: the latency a reviewer's approval adds before the agent moves again: the decision's
transaction commits, its on-commit hook puts the step task on Redis, a worker takes it,
claims the run and starts the tool step (``Step.started_at`` of the next step).

How:

1. A fresh bench database with the demo shop; a model simulator with zero latency; two
   worker processes in the recommended configuration (bench/in_flight.py).
2. ``--runs`` runs of the support agent on the seeded refund tickets are submitted and
   run by the workers until each is parked in waiting_for_approval (the policy reviews
   every refund) or has ended without one.
3. The pending requests are approved one at a time through ``approval_approve``, the
   service the inbox calls, ``--gap`` seconds apart so that decisions do not queue behind
   each other. For each: t0 = the wall clock right after the decision's transaction
   commits; t1 = ``started_at`` of the run's next step, recorded by the worker on the same
   machine's clock. The figure is t1 - t0.

Run: ``.venv/bin/python bench/decision_to_step.py``. One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

import harness
from in_flight import CONCURRENCY, DB_POOL_MAX, POOL, PROCESSES


def submit_refund_runs(count: int) -> list[str]:
    from examples.support.models import Ticket
    from runs import services

    tickets = list(Ticket.objects.filter(tags__contains=["refund"]).order_by("ticket_id"))
    if not tickets:
        raise RuntimeError("the seeded shop has no refund tickets")
    run_ids = []
    for index in range(count):
        ticket = tickets[index % len(tickets)]
        run, _ = services.run_submit(
            agent_name="support",
            run_input={
                "ticket_id": ticket.ticket_id,
                "customer_email": ticket.customer_email,
                "subject": ticket.subject,
                "body": ticket.body,
            },
        )
        run_ids.append(str(run.pk))
    return run_ids


def wait_parked(run_ids: list[str], timeout_s: float) -> list[int]:
    """Wait until no run is active; return the ids of the pending requests."""
    from reviews.models import ApprovalRequest, RequestState
    from runs.models import ACTIVE_STATES, Run

    deadline = time.monotonic() + timeout_s
    while Run.objects.filter(pk__in=run_ids, state__in=ACTIVE_STATES).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("runs did not park or end in time")
        time.sleep(0.5)
    return list(
        ApprovalRequest.objects.filter(run_id__in=run_ids, state=RequestState.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def measure(request_ids: list[int], gap_s: float) -> list[float]:
    from django.contrib.auth import get_user_model

    from reviews import services
    from reviews.models import ApprovalRequest
    from runs.models import Step

    approver, _ = get_user_model().objects.get_or_create(username="bench-approver")
    latencies = []
    for request_id in request_ids:
        request = ApprovalRequest.objects.get(pk=request_id)
        if request.approvals_required > 1:
            continue  # a two-person rule: one approval does not resume the run
        seq = request.run.next_seq
        services.approval_approve(request_id=request_id, user=approver, seen_hash=request.args_hash)
        committed = datetime.now(UTC)
        deadline = time.monotonic() + 10
        step = None
        while step is None and time.monotonic() < deadline:
            step = Step.objects.filter(run_id=request.run_id, seq=seq).first()
            if step is None:
                time.sleep(0.005)
        if step is None:
            raise RuntimeError(f"the run of request {request_id} did not move on")
        latencies.append((step.started_at - committed).total_seconds() * 1000)
        time.sleep(gap_s)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=80)
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between decisions")
    args = parser.parse_args()

    harness.note("decision_to_step: preparing the bench database")
    harness.prepare_database()
    with harness.simulator(latency_ms=0) as sim:
        harness.django_setup(AGENTDESK_LLM_BASE_URL=sim.base_url)
        workers = harness.workers(
            harness.bench_env(
                AGENTDESK_LLM_BASE_URL=sim.base_url, AGENTDESK_DB_POOL_MAX=str(DB_POOL_MAX)
            )
        )
        try:
            workers.start(PROCESSES, pool=POOL, concurrency=CONCURRENCY)
            run_ids = submit_refund_runs(args.runs)
            request_ids = wait_parked(run_ids, timeout_s=240)
            harness.note(f"decision_to_step: {len(request_ids)} pending requests; approving")
            latencies = measure(request_ids, args.gap)
        finally:
            workers.stop()
            workers.cleanup()
            harness.flush_redis()
    harness.emit(
        {
            "bench": "decision_to_step",
            "median_ms": round(harness.median(latencies), 1),
            "p95_ms": round(harness.percentile(latencies, 95), 1),
            "decisions": len(latencies),
            "pool": POOL,
            "processes": PROCESSES,
        }
    )


if __name__ == "__main__":
    main()
