"""``make bench``: the benchmarks of the performance budgets, one JSON line each.

1. ``step_overhead.py``: orchestration overhead per step (budget <= 5 ms median).
2. ``in_flight.py``: runs in flight on one 2-core worker host with 1 s model latency, in
   the recommended worker configuration (budget >= 200); then once more with one worker
   process on a CPU of its own and everything else on the others (``--pin-workers 1``),
   which is as close as a machine shared with the database comes to a worker host.
3. ``decision_to_step.py``: a decision's commit to the run's next step (budget <= 100 ms
   median).
4. ``inbox.py``: the reviewer's inbox at 100,000 pending requests (budget <= 50 ms p95, a
   constant number of queries whatever the page size).
5. ``audit_search.py``: filtered audit search over 1,000,000 events (budget <= 100 ms p95).
6. ``worker_kill.py``: a worker SIGKILLed mid-step three times; its steps redone within
   30 s and nothing repeated (a count).
7. ``eval.py``: an eval of 40 step examples on 4 worker slots with 200 ms model latency,
   against the ideal 40 * 0.2 s / 4 (budget: wall / ideal <= 1.5).

Each runs in its own process against the bench's own database, Redis database and queue
(see harness.py), whatever DATABASE_URL and REDIS_URL ``make`` passes, and starts and stops
its own simulator and workers. About 15 minutes in all. The sweep of worker pools behind
docs/concurrency.md is not part of it: ``python bench/in_flight.py --sweep``.

Exits non-zero if a benchmark fails to run, not when a figure misses its budget: budgets
are read off docs/benchmarks.md, never asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    ("step_overhead.py",),
    ("in_flight.py",),
    ("in_flight.py", "--pin-workers", "1", "--processes", "1"),
    ("decision_to_step.py",),
    ("inbox.py",),
    ("audit_search.py",),
    ("worker_kill.py",),
    ("eval.py",),
)
TIME_LIMIT_S = 600


def main() -> int:
    failed = []
    for script, *arguments in BENCHMARKS:
        name = " ".join([script, *arguments])
        # stdout (the JSON line) and stderr (progress) pass through.
        process = subprocess.Popen([sys.executable, str(HERE / script), *arguments])
        try:
            returncode = process.wait(timeout=TIME_LIMIT_S)
        except subprocess.TimeoutExpired:
            # SIGTERM lets the benchmark stop its simulator and workers on the way out.
            process.terminate()
            try:
                returncode = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                returncode = process.wait()
            print(f"{name}: stopped after {TIME_LIMIT_S} s", file=sys.stderr)
        if returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
