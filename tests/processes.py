"""Real processes for the tests and the benchmarks: the model simulator, Celery workers,
Daphne, and private PostgreSQL and Redis servers for the tests that stop one.

The one copy of each launcher: tests import it as ``tests.processes``, and bench/harness.py
imports it too (the bench scripts put the project root on ``sys.path``). Every process is
started in its own process group and stopped by its id; none of them touches the machine's
shared PostgreSQL or Redis beyond the database and Redis database it is given.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def embedded_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment without any AgentDesk setting: the embedded mode.

    SQLite and the filesystem broker live in ``data_dir``; ``settings`` are added on top.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AGENTDESK_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    return {**env, "AGENTDESK_DATA_DIR": str(data_dir), **settings}


def _wait_for_line(
    process: subprocess.Popen[bytes], log_path: Path, pattern: str, timeout_s: float
) -> str:
    """The first group of the first line of ``log_path`` matching ``pattern``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if match := re.search(pattern, text):
            return match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"no line matching {pattern!r}; output was:\n{log_path.read_text()}")


def _stop(process: subprocess.Popen[Any] | None, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL to its process group if it is still up after ``timeout_s``."""
    if process is not None and process.poll() is None:
        process.terminate()
        _wait_or_kill(process, timeout_s)


def _wait_or_kill(process: subprocess.Popen[Any], timeout_s: float) -> None:
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# The simulator's handler writes a response's headers and body in two send() calls; with
# Nagle's algorithm on, the body waits for the client's delayed ACK of the headers, about
# 40 ms on Linux loopback, which would swamp every benchmark figure. Until the server sets
# TCP_NODELAY itself, ``Simulator(nodelay=True)`` starts it with the flag set.
_SIMULATOR_NODELAY_MAIN = (
    "import sys; from runs.simulator import server, cli; "
    "server.SimulatorHandler.disable_nagle_algorithm = True; sys.exit(cli.main())"
)


@dataclass
class Simulator:
    """A model simulator process on a free loopback port; ``args`` are its command line's."""

    args: list[str] = field(default_factory=list)
    nodelay: bool = False
    process: subprocess.Popen[bytes] | None = None
    base_url: str = ""
    log_path: Path | None = field(default=None, init=False)  # its output, removed at stop

    def start(self) -> Simulator:
        handle, name = tempfile.mkstemp(prefix="agentdesk-simulator-", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        main = ["-c", _SIMULATOR_NODELAY_MAIN] if self.nodelay else ["-m", "runs.simulator"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *main, "--port", "0", *self.args],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.base_url = _wait_for_line(
                self.process, self.log_path, r"simulator listening on (http://\S+/v1)", 20
            )
        except RuntimeError:
            self.stop()
            raise
        return self

    def _control(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base_url.removesuffix("/v1") + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """POST /_sim/config: change knobs; the configuration now in force."""
        return self._control("/_sim/config", knobs)

    def stats(self) -> dict[str, Any]:
        """GET /_sim/stats: requests by outcome, in flight now, peak in flight."""
        return self._control("/_sim/stats")

    def requests_taken(self) -> int:
        """Chat requests the simulator has taken, answered or still in flight.

        (It counts a request in ``requests`` when its answer is sent.)
        """
        stats = self.stats()
        return int(stats["requests"]) + int(stats["in_flight"])

    def reset(self) -> None:
        """POST /_sim/reset: forget stats and attempt counters."""
        self._control("/_sim/reset", {})

    def stop(self) -> None:
        _stop(self.process, 5)
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)


@dataclass
class WorkerPool:
    """Celery worker processes on one queue, each in its own process group.

    SIGKILL to a group reaches the main process and its pool children at once, as when a
    host dies. ``name`` prefixes the workers' node names; ``cpus`` pins them (``taskset``);
    the log folder is a new temporary one unless given.
    """

    env: dict[str, str]
    queue: str
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="agentdesk-")))
    name: str = "test"
    loglevel: str = "INFO"
    cpus: set[int] | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    beat: subprocess.Popen[bytes] | None = None

    def start(
        self, count: int = 1, *, concurrency: int = 2, pool: str = "prefork", beat: bool = False
    ) -> None:
        """Start ``count`` workers; with ``beat``, the first of them also runs the scheduler.

        With INFO logs (the tests'), it returns once each of them says it is ready, so that
        a run submitted next is not older than the redelivery delay by the time the
        worker's first sweep looks at it (booting a worker can take that long on a busy
        machine). With quieter logs (the bench's), nothing says so, and it returns at once.
        """
        spawned = []
        for started in range(count):
            index = len(self.processes)
            command = [
                *(["taskset", "-c", cpu_list(self.cpus)] if self.cpus else []),
                *self._celery("worker"),
                "--queues",
                self.queue,
                "--pool",
                pool,
                "--concurrency",
                str(concurrency),
                "--hostname",
                f"{self.name}{index}-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",  # worker events: nothing here listens to them
            ]
            if beat and started == 0:
                command += ["--beat", "--schedule", str(self.log_dir / "beat-schedule")]
            self.commands.append(command)
            self.processes.append(self._spawn(command, f"worker-{index}.log"))
            spawned.append(index)
        if self.loglevel in ("DEBUG", "INFO"):
            for index in spawned:
                _wait_for_line(
                    self.processes[index],
                    self.log_dir / f"worker-{index}.log",
                    r"(\S+@\S+) ready\.",
                    120,
                )

    def start_beat(self) -> None:
        """The scheduler in a process of its own, as in production: a killed worker spares it."""
        command = [*self._celery("beat"), "--schedule", str(self.log_dir / "beat-schedule")]
        self.beat = self._spawn(command, "beat.log")

    def _celery(self, program: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "agentdesk",
            program,
            "--loglevel",
            self.loglevel,
        ]

    def _spawn(self, command: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with open(self.log_dir / log_name, "ab") as log:
            return subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def revive(self) -> int:
        """Start again every worker that has exited, as its supervisor would; how many.

        Production workers run under a supervisor that restarts them (docs/deployment.md):
        Celery 5.7 can stop a worker with an "Unrecoverable error" when the broker's
        connection drops while messages are unacknowledged.
        """
        revived = 0
        for index, process in enumerate(self.processes):
            if process.poll() is not None:
                self.processes[index] = self._spawn(self.commands[index], f"worker-{index}.log")
                revived += 1
        return revived

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes)

    def logs(self, tail_chars: int | None = None) -> str:
        """Every log (workers', beat's), each cut to its last ``tail_chars`` characters."""
        return "\n".join(
            f"===== {path.name} =====\n{path.read_text(errors='replace')[-(tail_chars or 0) :]}"
            for path in sorted(self.log_dir.glob("*.log"))
        )

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, sig)
        for process in self.processes:
            process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (a warm shutdown: the main process stops its pool), then SIGKILL to the
        group of any process still up; no pool child outlives its worker."""
        everything = [*self.processes, *([self.beat] if self.beat else [])]
        for process in everything:
            if process.poll() is None:
                process.terminate()
        for process in everything:
            _wait_or_kill(process, 30)
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        self.processes.clear()
        self.commands.clear()
        self.beat = None

    def cleanup(self) -> None:
        """Remove the log folder (after ``stop``)."""
        shutil.rmtree(self.log_dir, ignore_errors=True)


def cpu_list(cpus: set[int]) -> str:
    """``taskset``'s form of a CPU set: "0,2,3"."""
    return ",".join(str(cpu) for cpu in sorted(cpus))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class WebServer:
    """The ASGI app under Daphne (HTTP and websockets) on a free loopback port.

    pytest-django's ``live_server`` is a WSGI server without websockets; the browser tests
    need the real thing, against the same test database as the workers.
    """

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    base_url: str = ""

    def start(self) -> WebServer:
        # As in production: static files collected, then served by WhiteNoise.
        self.env = {**self.env, "AGENTDESK_DATA_DIR": str(self.log_path.parent / "data")}
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--no-input"],
            cwd=ROOT,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        # The origin the browser opens: websockets are accepted from it alone.
        self.env = {**self.env, "AGENTDESK_BASE_URL": self.base_url}
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "agentdesk.asgi:application",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.base_url}/login/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("daphne did not answer within 30 s")

    def stop(self) -> None:
        _stop(self.process, 10)


def postgres_bin(program: str) -> str:
    """A program of the installed PostgreSQL (``pg_config --bindir``: not always on PATH)."""
    found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    return str(Path(found.stdout.strip()) / program)


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of one test's own, in a temporary folder, on a free port.

    For tests that stop or restart the database: the shared server on 5432 is never
    touched. PostgreSQL refuses to run as root, so as root the server runs as the
    ``postgres`` user, and its folder belongs to that user. Trust auth on loopback only.
    """

    data_dir: Path | None = None
    port: int = 0

    def _as_owner(self, *command: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return list(command)

    def start(self) -> PrivatePostgres:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="agentdesk-pg-"))
            if os.geteuid() == 0:
                shutil.chown(self.data_dir, "postgres", "postgres")
            subprocess.run(
                self._as_owner(
                    postgres_bin("initdb"),
                    "-D",
                    str(self.data_dir / "data"),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                ),
                check=True,
                capture_output=True,
                timeout=120,
            )
            self.port = free_port()
        subprocess.run(
            self._as_owner(
                postgres_bin("pg_ctl"),
                "-D",
                str(self.data_dir / "data"),
                "-l",
                str(self.data_dir / "server.log"),
                "-o",
                f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                "-w",
                "start",
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.data_dir is None:
            return
        subprocess.run(
            self._as_owner(
                postgres_bin("pg_ctl"),
                "-D",
                str(self.data_dir / "data"),
                "-m",
                mode,
                "-w",
                "stop",
            ),
            capture_output=True,
            timeout=60,
        )

    def restart(self) -> None:
        """Stop (every connection is cut) and start again on the same port and data."""
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class PrivateRedis:
    """A Redis server of one test's own on a free loopback port, in memory only.

    For tests that stop or restart the broker: the shared server on 6379 is never touched.
    ``restart`` comes back empty on the same port, as a Redis without persistence does.
    """

    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> PrivateRedis:
        if not self.port:
            self.port = free_port()
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not come up on port {self.port}")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        """Whether it answers PING now."""
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        """Gone at once, every connection cut, nothing saved (``shutdown nosave``)."""
        _stop(self.process, 10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
