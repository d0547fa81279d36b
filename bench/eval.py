"""The eval runner's parallelism: an eval of N step examples on C worker slots (budget:
wall / ideal <= 1.5).

What: how close an eval comes to running its examples C at a time. A step example is one
model call (evals.runner), so with the simulator at a fixed latency L and C task slots the
eval cannot finish sooner than ``ideal_s = N * L / C``; ``wall_s`` is from ``eval_start``
(the eval recorded, its N tasks queued on commit) to the eval's ``finished_at``, written by
the last result in. The figure is ``wall_s / ideal_s``: 1.0 is perfect parallelism, and
what is above it is the runner's own cost (queueing, the policy's judgement of each call,
recording results under the eval's lock) plus the workers' start-up lag.

How:

1. A fresh bench database with the demo shop; its golden dataset's step examples
   (examples.support.golden), the first ``--examples`` of them, stored as a dataset.
2. The simulator at ``--latency-ms``; one worker process with ``--concurrency`` threads
   (the threads pool, as in production), started and ready before the clock starts.
3. One warm-up eval of ``--concurrency`` examples (connections, imports), then the
   measured eval of the production release.

Run: ``.venv/bin/python bench/eval.py [--examples 40 --latency-ms 200 --concurrency 4]``.
One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

import harness

if TYPE_CHECKING:
    from evals.models import DatasetVersion

POOL = "threads"


def golden_version(count: int) -> DatasetVersion:
    """A dataset of the first ``count`` step examples of the demo's golden dataset."""
    from agents.registry import agent_get
    from evals.datasets import dataset_create
    from examples.support.golden import golden_examples
    from releases.services import release_production

    agent = agent_get("support")
    prompt = release_production(agent_name="support").prompt_version
    steps = [e for e in golden_examples(agent=agent, prompt=prompt) if e["kind"] == "step"]
    if len(steps) < count:
        raise SystemExit(f"the golden dataset has {len(steps)} step examples, not {count}")
    return dataset_create(agent_name="support", name="bench", user=None, examples=steps[:count])


def timed_eval(version: DatasetVersion, timeout_s: float) -> tuple[float, int]:
    """Seconds from eval_start to the eval's finished_at, and the examples in error."""
    from evals.models import Eval, EvalState
    from evals.runner import eval_start
    from releases.services import release_production

    release = release_production(agent_name="support")
    started = time.time()
    evaluation = eval_start(release=release, dataset_version=version, user=None)
    deadline = time.monotonic() + timeout_s
    while True:
        evaluation = Eval.objects.get(pk=evaluation.pk)
        if evaluation.state == EvalState.FINISHED and evaluation.finished_at is not None:
            return evaluation.finished_at.timestamp() - started, int(evaluation.metrics["errors"])
        if time.monotonic() > deadline:
            raise RuntimeError(f"eval {evaluation.pk} did not finish within {timeout_s} s")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    harness.note("eval: preparing the bench database")
    harness.prepare_database()
    with harness.simulator(latency_ms=args.latency_ms) as sim:
        harness.django_setup(AGENTDESK_LLM_BASE_URL=sim.base_url)
        from evals.datasets import dataset_create

        measured = golden_version(args.examples)
        warm = dataset_create(
            agent_name="support",
            name="bench-warm-up",
            user=None,
            examples=measured.examples[: args.concurrency],
        )
        workers = harness.workers(harness.bench_env(AGENTDESK_LLM_BASE_URL=sim.base_url))
        try:
            workers.start(1, pool=POOL, concurrency=args.concurrency)
            timed_eval(warm, timeout_s=120)
            harness.note(f"eval: {args.examples} examples on {args.concurrency} slots")
            wall_s, errors = timed_eval(measured, timeout_s=600)
        finally:
            workers.stop()
            workers.cleanup()
            harness.flush_redis()
    ideal_s = args.examples * args.latency_ms / 1000 / args.concurrency
    harness.emit(
        {
            "bench": "eval",
            "examples": args.examples,
            "latency_ms": args.latency_ms,
            "concurrency": args.concurrency,
            "pool": POOL,
            "ideal_s": round(ideal_s, 2),
            "wall_s": round(wall_s, 2),
            "ratio": round(wall_s / ideal_s, 2),
            "errors": errors,
        }
    )


if __name__ == "__main__":
    main()
