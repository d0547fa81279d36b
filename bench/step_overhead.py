"""Orchestration overhead per step, model time excluded (budget: <= 5 ms median).

What: the time the runtime adds to a model call: claiming the run, loading its checkpoint,
the breaker checks, recording the step, the new checkpoint and the actions, and putting
the next step on the broker.

How:

1. A fresh bench database with the demo shop; a model simulator with zero latency.
2. In this process, runs of the example ``support`` agent on the seeded tickets are
   submitted and their steps executed one after another by calling
   ``runs.services.run_step_execute`` directly (no Celery; the step tasks each commit
   puts on Redis are never consumed, and the bench's Redis database is flushed at the
   end). Each call is timed, until at least ``--model-steps`` model steps are recorded.
3. Right after each model step, the conversation it sent is sent again to the same
   simulator through the openai SDK with the gateway's settings: the bare call.
   Interleaving matters: back to back, bare calls run about 1 ms faster than the same
   call after a few milliseconds of other work (the simulator's thread and the CPU go
   idle in between), which would count as overhead what is not. Overhead = median step
   time - median bare call time; its p95 is the 95th percentile of (step time - bare time
   of the same conversation).
4. Tool steps make no model call; their median wall time (the demo shop's tool included)
   is reported on its own.

The first ``--warm-up`` steps (imports, connection set-up) are not counted. The CPU time
this process spends in a step (every thread, the model call's SDK work included, the
simulator's not) is reported too: ``model_step_cpu_median_ms`` and
``tool_step_cpu_median_ms``. On a busy machine a step's wall time includes waiting for a
CPU; its CPU time mostly does not, and it is what limits how many steps a host can run.

Run: ``.venv/bin/python bench/step_overhead.py`` (PostgreSQL and Redis on loopback). Prints
one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from typing import Any

import harness


@dataclass
class Timed:
    kind: str  # "model" or "tool"
    seconds: float
    cpu_seconds: float  # this process's CPU time (every thread) during the step
    bare_seconds: float | None = None  # model steps: the same conversation, SDK only


class BareCall:
    """Send a conversation to the simulator exactly as the gateway does, and time it."""

    def __init__(self, base_url: str) -> None:
        import openai

        from agentdesk.registry import agent_get

        agent = agent_get("support")
        self.model = agent.model_routes[0].model
        self.tools = [tool.openai_schema() for tool in agent.tools]
        # The gateway's client settings: no SDK retries, the settings' timeout.
        self.client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)

    def __call__(self, messages: list[dict[str, Any]]) -> float:
        from django.conf import settings

        started = time.perf_counter()
        self.client.chat.completions.create(
            model=self.model,
            messages=messages,  # type: ignore[arg-type]
            tools=self.tools,  # type: ignore[arg-type]
            tool_choice="auto",
            timeout=settings.AGENTDESK_LLM_TIMEOUT_S,
        )
        return time.perf_counter() - started


def drive_runs(*, model_steps: int, warm_up: int, bare_call: BareCall) -> list[Timed]:
    """Submit runs and execute their steps here, timing each ``run_step_execute`` call."""
    from examples.support.models import Ticket
    from runs import services
    from runs.models import ACTIVE_STATES, Run, Step

    tickets = list(Ticket.objects.order_by("ticket_id"))
    timed: list[Timed] = []
    executed = 0
    while sum(t.kind == "model" for t in timed) < model_steps:
        ticket = tickets[executed % len(tickets)]
        run, _ = services.run_submit(
            agent_name="support",
            run_input={
                "ticket_id": ticket.ticket_id,
                "customer_email": ticket.customer_email,
                "subject": ticket.subject,
                "body": ticket.body,
            },
        )
        while run.state in ACTIVE_STATES:
            kind = "tool" if run.checkpoint.get("pending_actions") else "model"
            messages = copy.deepcopy(run.checkpoint["messages"])
            seq = run.next_seq
            started, cpu_started = time.perf_counter(), time.process_time()
            services.run_step_execute(run_id=str(run.pk), seq=seq)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            bare = bare_call(messages) if kind == "model" else None
            step = Step.objects.filter(run_id=run.pk, seq=seq).first()
            if step is None or step.kind != kind:
                raise RuntimeError(f"step {seq} of run {run.pk} was not recorded as a {kind} step")
            executed += 1
            if executed > warm_up:
                timed.append(Timed(kind, elapsed, cpu, bare))
            run = Run.objects.get(pk=run.pk)
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-steps", type=int, default=400, help="at least this many")
    parser.add_argument("--warm-up", type=int, default=20, help="steps not counted")
    args = parser.parse_args()

    harness.note("step_overhead: preparing the bench database")
    harness.prepare_database()
    try:
        with harness.simulator(latency_ms=0) as sim:
            harness.django_setup(AGENTDESK_LLM_BASE_URL=sim.base_url)
            timed = drive_runs(
                model_steps=args.model_steps,
                warm_up=args.warm_up,
                bare_call=BareCall(sim.base_url),
            )
    finally:
        harness.flush_redis()

    model = [t for t in timed if t.kind == "model"]
    tool = [t.seconds for t in timed if t.kind == "tool"]
    step_ms = [t.seconds * 1000 for t in model]
    bare_ms = [(t.bare_seconds or 0) * 1000 for t in model]
    paired_ms = [s - b for s, b in zip(step_ms, bare_ms, strict=True)]
    result = {
        "bench": "step_overhead",
        "median_ms": round(harness.median(step_ms) - harness.median(bare_ms), 2),
        "p95_ms": round(harness.percentile(paired_ms, 95), 2),
        "baseline_median_ms": round(harness.median(bare_ms), 2),
        "step_median_ms": round(harness.median(step_ms), 2),
        "tool_step_median_ms": round(harness.median([s * 1000 for s in tool]), 2),
        "model_step_cpu_median_ms": round(harness.median([t.cpu_seconds * 1000 for t in model]), 2),
        "tool_step_cpu_median_ms": round(
            harness.median([t.cpu_seconds * 1000 for t in timed if t.kind == "tool"]), 2
        ),
        "steps": len(timed),
    }
    harness.note(
        f"step_overhead: {len(model)} model steps, {len(tool)} tool steps; "
        f"step p95 {harness.percentile(step_ms, 95):.2f} ms, "
        f"bare p95 {harness.percentile(bare_ms, 95):.2f} ms, "
        f"paired overhead median {harness.median(paired_ms):.2f} ms"
    )
    harness.emit(result)


if __name__ == "__main__":
    main()
