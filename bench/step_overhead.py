"""Orchestration overhead per step, model time excluded (budget: <= 5 ms median).

What: the time the runtime adds to a model call: claiming the run (or keeping its next
step, when steps are chained), loading its checkpoint, the breaker checks, recording the
step, the new checkpoint and the actions, and handing on the next step.

How:

1. A fresh bench database with the demo shop; a model simulator with zero latency.
2. In this process, runs of the example ``support`` agent on the seeded tickets are
   submitted and executed by calling ``runs.services.run_step_execute`` directly, as the
   step task does, with ``chain_s`` as the task passes it (``--chain-s``, default the
   setting's default, 30 s: a call executes the run's steps one after another until the
   run ends, parks for review, or a step is due later; ``--chain-s 0``: one step per call,
   each next step put on the broker as without chaining). No Celery worker: the messages
   put on Redis are never consumed, and the bench's Redis database is flushed at the end.
3. Each step is timed from its start to the next step's start (or the call's return); the
   first step of a call is timed from the call's start, so the claim is counted. Every
   moment of a call belongs to exactly one step.
4. Right before each model step starts, the conversation it is about to send is sent to
   the same simulator through the openai SDK exactly as the gateway sends it: the bare
   call, timed, and left out of the step's time. Interleaving matters: back to back, bare
   calls run about 1 ms faster than the same call after a few milliseconds of other work
   (the simulator's thread and the CPU go idle in between), which would count as overhead
   what is not. Overhead = median step time - median bare call time; its p95 is the 95th
   percentile of (step time - bare time of the same conversation).
5. Tool steps make no model call; their median wall time (the demo shop's tool included)
   is reported on its own. A read-only call that a model step makes at once
   (runs.kernel.tool_step.read_calls_inline) is timed as a tool step of its own: the time of
   the call (its breaker check, the tool thread and the tool's own work) is taken out of
   the model step and reported as ``inline_tool_call_median_ms``; what recording it adds
   to the model step's commit stays in the model step's time, so the overhead is, if
   anything, overstated.

The first ``--warm-up`` steps (imports, connection set-up) are not counted. The CPU time
this process spends in a step (every thread, the model call's SDK work included, the
simulator's not, the bare call's not) is reported too: ``model_step_cpu_median_ms`` and
``tool_step_cpu_median_ms``. On a busy machine a step's wall time includes waiting for a
CPU; its CPU time mostly does not, and it is what limits how many steps a host can run.

Run: ``.venv/bin/python bench/step_overhead.py`` (PostgreSQL and Redis on loopback). Prints
one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
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
    inline: bool = False  # a read-only tool call made within its model step


class BareCall:
    """Send a conversation to the simulator exactly as the gateway does, and time it."""

    def __init__(self, base_url: str) -> None:
        import openai

        from agents.registry import agent_get

        agent = agent_get("support")
        self.model = agent.model_routes[0].model
        self.tools = [tool.openai_schema() for tool in agent.tools]
        # The gateway's client settings: no SDK retries, the settings' timeout.
        self.client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)

    def __call__(self, messages: list[dict[str, Any]]) -> float:
        from django.conf import settings

        from runs.gateway.client import _request_body

        started = time.perf_counter()
        # The request exactly as the gateway sends it (runs.gateway.client.model_complete); the
        # reply decoded from JSON and no more, so reading it is counted as overhead.
        self.client.post(
            "/chat/completions",
            body=_request_body(self.model, messages, self.tools),
            cast_to=object,
            options={"timeout": settings.AGENTDESK_LLM_TIMEOUT_S},
        )
        return time.perf_counter() - started


class StepClock:
    """Splits the time of ``run_step_execute`` calls into steps (see the module's step 3)."""

    def __init__(self, bare_call: BareCall) -> None:
        self.bare_call = bare_call
        self.timed: list[Timed] = []
        self._open: dict[str, Any] | None = None

    def call_started(self) -> None:
        self._open = self._new(time.perf_counter(), time.process_time())

    def step_entered(self, run: Any) -> None:
        """Called as ``runs.services._step`` starts: closes the step before, opens this one."""
        now, cpu = time.perf_counter(), time.process_time()
        if self._open is None or self._open["kind"] is not None:
            self._close(now, cpu)
            self._open = self._new(now, cpu)
        step = self._open
        step["kind"] = "tool" if run.checkpoint.get("pending_actions") else "model"
        if step["kind"] == "model":
            started, cpu_started = time.perf_counter(), time.process_time()
            step["bare"] = self.bare_call(run.checkpoint["messages"])
            step["excluded"] += time.perf_counter() - started
            step["excluded_cpu"] += time.process_time() - cpu_started

    def call_returned(self) -> None:
        self._close(time.perf_counter(), time.process_time())
        self._open = None

    def in_model_step(self) -> bool:
        return self._open is not None and self._open["kind"] == "model"

    def inline_call(self, seconds: float, cpu_seconds: float) -> None:
        """A read-only call the open model step made: its own step, out of the model's."""
        assert self._open is not None
        self._open["excluded"] += seconds
        self._open["excluded_cpu"] += cpu_seconds
        self._open["inline"].append(Timed("tool", seconds, cpu_seconds, inline=True))

    @staticmethod
    def _new(now: float, cpu: float) -> dict[str, Any]:
        return {
            "kind": None,
            "at": now,
            "cpu": cpu,
            "excluded": 0.0,
            "excluded_cpu": 0.0,
            "inline": [],
        }

    def _close(self, now: float, cpu: float) -> None:
        step = self._open
        if step is None or step["kind"] is None:
            return  # a call that found nothing to do (not expected here)
        self.timed.append(
            Timed(
                step["kind"],
                now - step["at"] - step["excluded"],
                cpu - step["cpu"] - step["excluded_cpu"],
                step.get("bare"),
            )
        )
        self.timed.extend(step["inline"])


def drive_runs(
    *, model_steps: int, warm_up: int, bare_call: BareCall, chain_s: float
) -> list[Timed]:
    """Submit runs and execute them here, timing each step of each ``run_step_execute`` call."""
    from examples.support.models import Ticket
    from runs import services
    from runs.kernel import tool_step
    from runs.models import ACTIVE_STATES, Run, Step

    clock = StepClock(bare_call)
    step = services._step
    call = tool_step._call

    def timed_step(run: Any, seq: int) -> None:
        clock.step_entered(run)
        step(run, seq)

    def timed_call(*args: Any, **kwargs: Any) -> Any:
        if not clock.in_model_step():
            return call(*args, **kwargs)
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            return call(*args, **kwargs)
        finally:
            clock.inline_call(time.perf_counter() - started, time.process_time() - cpu_started)

    services._step = timed_step  # type: ignore[assignment]
    tool_step._call = timed_call  # type: ignore[assignment]
    tickets = list(Ticket.objects.order_by("ticket_id"))
    submitted = 0
    try:
        while sum(t.kind == "model" for t in clock.timed) < model_steps + warm_up:
            ticket = tickets[submitted % len(tickets)]
            submitted += 1
            run, _ = services.run_submit(
                agent_name="support",
                run_input={
                    "ticket_id": ticket.ticket_id,
                    "customer_email": ticket.customer_email,
                    "subject": ticket.subject,
                    "body": ticket.body,
                },
            )
            recorded = len(clock.timed)
            while run.state in ACTIVE_STATES:
                clock.call_started()
                services.run_step_execute(run_id=str(run.pk), seq=run.next_seq, chain_s=chain_s)
                clock.call_returned()
                run = Run.objects.get(pk=run.pk)
            kinds = list(
                Step.objects.filter(run_id=run.pk).order_by("seq").values_list("kind", flat=True)
            )
            if kinds != [t.kind for t in clock.timed[recorded:]]:
                raise RuntimeError(f"run {run.pk}: steps {kinds} were not timed as recorded")
    finally:
        services._step = step  # type: ignore[assignment]
        tool_step._call = call  # type: ignore[assignment]
    return clock.timed[warm_up:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-steps", type=int, default=400, help="at least this many")
    parser.add_argument("--warm-up", type=int, default=20, help="steps not counted")
    parser.add_argument(
        "--chain-s",
        type=float,
        default=None,
        help="as AGENTDESK_STEP_CHAIN_S (default: its default); 0: one step per call",
    )
    args = parser.parse_args()

    harness.note("step_overhead: preparing the bench database")
    harness.prepare_database()
    try:
        with harness.simulator(latency_ms=0) as sim:
            harness.django_setup(AGENTDESK_LLM_BASE_URL=sim.base_url)
            from django.conf import settings

            chain_s = settings.AGENTDESK_STEP_CHAIN_S if args.chain_s is None else args.chain_s
            timed = drive_runs(
                model_steps=args.model_steps,
                warm_up=args.warm_up,
                bare_call=BareCall(sim.base_url),
                chain_s=chain_s,
            )
    finally:
        harness.flush_redis()

    model = [t for t in timed if t.kind == "model"]
    tool = [t.seconds for t in timed if t.kind == "tool" and not t.inline]
    inline = [t.seconds for t in timed if t.inline]
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
        "inline_tool_call_median_ms": round(harness.median([s * 1000 for s in inline]), 2)
        if inline
        else None,
        "inline_tool_calls": len(inline),
        "model_step_cpu_median_ms": round(harness.median([t.cpu_seconds * 1000 for t in model]), 2),
        "tool_step_cpu_median_ms": round(
            harness.median(
                [t.cpu_seconds * 1000 for t in timed if t.kind == "tool" and not t.inline]
            ),
            2,
        ),
        "steps": len(timed),
        "chain_s": chain_s,
    }
    harness.note(
        f"step_overhead: {len(model)} model steps, {len(tool)} tool steps, "
        f"{len(inline)} read-only calls made within their model step; "
        f"step p95 {harness.percentile(step_ms, 95):.2f} ms, "
        f"bare p95 {harness.percentile(bare_ms, 95):.2f} ms, "
        f"paired overhead median {harness.median(paired_ms):.2f} ms"
    )
    harness.emit(result)


if __name__ == "__main__":
    main()
