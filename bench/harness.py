"""What the benchmarks share: their own database, Redis and queue, and the processes they start.

Every benchmark runs against resources of its own, so it never touches the test suite's
data or a running demo, whatever DATABASE_URL or REDIS_URL the caller has set (``make
bench`` sets the test ones):

- PostgreSQL database ``agentdesk_bench`` (``AGENTDESK_BENCH_DATABASE_URL`` overrides it;
  the name must end in ``_bench``, because it is dropped and created again on every run);
- Redis database 13 (``AGENTDESK_BENCH_REDIS_URL``), flushed before and after;
- a Celery queue named after the benchmark's process id.

Processes (the model simulator, Celery workers) are started by the launchers the tests use
(tests/processes.py), in their own process groups, and stopped, by their ids, when the
benchmark ends, whether it succeeds or not.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # The scripts run as ``python bench/<name>.py``: make the project importable.
    sys.path.insert(0, str(ROOT))

# The one copy of the process launchers, shared with the test suite.
from tests.processes import Simulator, WorkerPool, cpu_list  # noqa: E402

DATABASE_URL = os.environ.get(
    "AGENTDESK_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentdesk_bench"
)
REDIS_URL = os.environ.get("AGENTDESK_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
QUEUE = f"agentdesk-bench-{os.getpid()}"
DB_NAME = urlsplit(DATABASE_URL).path.lstrip("/")

# SIGTERM (a time limit, a supervisor) unwinds like Ctrl-C, so that every ``finally`` and
# ``with`` stops the processes the benchmark started.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def bench_env(**settings: str) -> dict[str, str]:
    """This process's environment with every AgentDesk setting replaced by the bench's own.

    Inherited AGENTDESK_* variables are dropped so that a figure depends only on what the
    benchmark sets; ``settings`` come on top (the simulator's URL, the pool size, ...).
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AGENTDESK_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    return {
        **env,
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "AGENTDESK_SECRET_KEY": "bench-only-not-secret",
        "AGENTDESK_CELERY_QUEUE": QUEUE,
        "AGENTDESK_LOG_LEVEL": "WARNING",
        **settings,
    }


def django_setup(**settings: str) -> None:
    """Configure Django in this process against the bench database."""
    for name in [k for k in os.environ if k.startswith("AGENTDESK_")]:
        del os.environ[name]
    os.environ.update(bench_env(**settings))
    os.environ["DJANGO_SETTINGS_MODULE"] = "agentdesk.settings"
    import django

    django.setup()


def _admin_connection() -> Any:
    import psycopg

    parts = urlsplit(DATABASE_URL)
    return psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True)


def prepare_database() -> None:
    """Drop and create the bench database, migrate it, seed the demo shop; flush Redis."""
    if not DB_NAME.endswith("_bench"):
        sys.exit(f"refusing to drop {DB_NAME!r}: the bench database's name must end in _bench")
    from psycopg import sql

    with _admin_connection() as conn:
        name = sql.Identifier(DB_NAME)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    for command in (["migrate", "--no-input"], ["seed_demo"]):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=bench_env(),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    flush_redis()


def flush_redis() -> None:
    """Empty the bench's Redis database: queued step tasks, rate-limit counters."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def pg_connections() -> int:
    """Connections to the bench database right now, this one not counted."""
    with _admin_connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (DB_NAME,),
        ).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def simulator(latency_ms: int) -> Iterator[Simulator]:
    """A simulator with a fixed latency and no faults, stopped on the way out."""
    sim = Simulator(["--seed", "7", "--latency-ms", str(latency_ms)], nodelay=True).start()
    try:
        yield sim
    finally:
        sim.stop()


def workers(env: dict[str, str], *, cpus: set[int] | None = None) -> WorkerPool:
    """Celery workers on the bench queue (started with ``.start()``), logging warnings only."""
    return WorkerPool(
        env,
        queue=QUEUE,
        log_dir=Path(tempfile.mkdtemp(prefix="agentdesk-bench-")),
        name="bench",
        loglevel="WARNING",
        cpus=cpus,
    )


# The machine's shared servers, moved off the workers' CPUs by ``pinned``.
_SERVERS = ("postgres", "redis-server")


@contextmanager
def pinned(cpus: set[int]) -> Iterator[None]:
    """Run this process, its children from now on (the simulator), PostgreSQL and Redis on
    ``cpus`` only, and put them back on every CPU afterwards.

    For a measurement of workers on CPUs of their own (``Workers.cpus``, the others), as on
    a worker host, with the database, the broker, the model and the driver elsewhere. Every
    thread of each server process is moved (``taskset -a``); PostgreSQL's new backends are
    forked by its postmaster and inherit its CPUs. A benchmark killed with SIGKILL leaves
    them pinned: ``taskset -a -p -c 0-N <pid>`` puts them back.
    """
    everything = os.sched_getaffinity(0)
    servers = [pid for pid, _, comm, _ in _processes() if comm in _SERVERS]

    def move(pids: list[int], to: set[int]) -> None:
        for pid in pids:
            subprocess.run(
                ["taskset", "-a", "-p", "-c", cpu_list(to), str(pid)],
                check=False,
                capture_output=True,
            )

    os.sched_setaffinity(0, cpus)
    move(servers, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, everything)
        # Backends started meanwhile inherited the pinning: every server process now.
        move([pid for pid, _, comm, _ in _processes() if comm in _SERVERS], everything)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> Iterator[tuple[int, int, str, float]]:
    """(pid, process group, command name, CPU seconds so far) of every process."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            data = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        comm = data[data.index("(") + 1 : data.rindex(")")]
        fields = data[data.rindex(")") + 2 :].split()
        # proc(5): pgrp is field 5, utime and stime fields 14 and 15 (here 2, 11, 12).
        cpu_s = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        yield int(entry.name), int(fields[2]), comm, cpu_s


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has spent not idle, over all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / _CLOCK_TICKS


class CpuMeter:
    """Where the machine's CPU time goes: workers, simulator, PostgreSQL, Redis, this driver.

    ``other`` is the rest of the machine's busy time: processes that ended within the
    window (PostgreSQL backends of closed connections) and anything else running on the
    host, such as another session's tests.
    """

    def __init__(self, *, workers: list[int], simulator: int) -> None:
        self.groups = {"workers": set(workers), "simulator": {simulator}}

    def _category(self, pid: int, pgid: int, comm: str) -> str | None:
        for name, pgids in self.groups.items():
            if pgid in pgids:
                return name
        if pid == os.getpid():
            return "driver"
        if comm.startswith("postgres"):
            return "postgres"
        if comm.startswith("redis-server"):
            return "redis"
        return None

    def snapshot(self) -> tuple[float, float, dict[int, tuple[str, float]]]:
        per_pid = {}
        for pid, pgid, comm, cpu_s in _processes():
            category = self._category(pid, pgid, comm)
            if category is not None:
                per_pid[pid] = (category, cpu_s)
        return time.monotonic(), _machine_busy_s(), per_pid

    @staticmethod
    def cores_used(
        before: tuple[float, float, dict[int, tuple[str, float]]],
        after: tuple[float, float, dict[int, tuple[str, float]]],
    ) -> dict[str, float]:
        """Cores used on average between two snapshots, by category."""
        elapsed = after[0] - before[0]
        used: dict[str, float] = {}
        for pid, (category, cpu_s) in after[2].items():
            start = before[2].get(pid, (category, 0.0))[1]
            used[category] = used.get(category, 0.0) + (cpu_s - start)
        machine = after[1] - before[1]
        used["other"] = max(machine - sum(used.values()), 0.0)
        result = {name: round(seconds / elapsed, 2) for name, seconds in sorted(used.items())}
        result["total"] = round(machine / elapsed, 2)
        return result


def rss_mb(process_groups: list[int]) -> float:
    """Resident memory of every process in these process groups, in MiB."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid, pgid, _, _ in _processes():
        if pgid in process_groups:
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            except OSError:
                continue
    return round(total / 2**20)


class Sampler(threading.Thread):
    """Call ``sample()`` every ``interval_s`` seconds on a thread until stopped."""

    def __init__(self, sample: Any, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True, name="bench-sampler")
        self.sample = sample
        self.interval_s = interval_s
        self.rows: list[Any] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._stop_event.is_set():
            self.rows.append(self.sample())
            next_at += self.interval_s
            self._stop_event.wait(max(next_at - time.monotonic(), 0))

    def stop(self) -> list[Any]:
        self._stop_event.set()
        self.join()
        return self.rows


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation, as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def emit(result: dict[str, Any]) -> None:
    """The benchmark's one line on stdout; everything else goes to stderr."""
    print(json.dumps(result), flush=True)


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
