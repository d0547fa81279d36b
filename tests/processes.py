"""Real processes for the tests: the model simulator and Celery workers.

They run against the test database that pytest-django created, on a Celery queue and a
Redis database of their own, so nothing leaks between a test session and a running demo.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
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


def _read_line_matching(process: subprocess.Popen[str], pattern: str, timeout_s: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            seen.append(line)
            if match := re.search(pattern, line):
                return match.group(1)
        elif process.poll() is not None:
            break
    raise RuntimeError(f"no line matching {pattern!r}; output was:\n{''.join(seen)}")


@dataclass
class Simulator:
    """A model simulator process on a free loopback port."""

    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    base_url: str = ""

    def start(self) -> Simulator:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runs.simulator", "--port", "0", *self.args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.base_url = _read_line_matching(
            self.process, r"simulator listening on (http://\S+/v1)", 20
        )
        return self

    def configure(self, **knobs: Any) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base_url.removesuffix("/v1") + "/_sim/config",
            data=json.dumps(knobs).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class WorkerPool:
    """Celery worker processes (prefork) for one test session.

    Each worker is started in its own process group, so SIGKILL reaches the main process
    and its pool children at once, as when a host dies.
    """

    env: dict[str, str]
    queue: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_dir: Path | None = None
    commands: list[list[str]] = field(default_factory=list)

    def start(self, count: int = 1, *, concurrency: int = 2, beat: bool = False) -> None:
        """Start ``count`` workers; with ``beat``, the first of them also runs the scheduler."""
        for started in range(count):
            index = len(self.processes)
            command = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "agentdesk",
                "worker",
                "--queues",
                self.queue,
                "--concurrency",
                str(concurrency),
                "--hostname",
                f"test{index}-{os.getpid()}@%h",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ]
            if beat and started == 0:
                assert self.log_dir is not None
                command += ["--beat", "--schedule", str(self.log_dir / "beat-schedule")]
            self.commands.append(command)
            self.processes.append(self._spawn(index))

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        log = open(self._log_path(index), "ab")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen(
            self.commands[index],
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
                self.processes[index] = self._spawn(index)
                revived += 1
        return revived

    def _log_path(self, index: int) -> Path:
        assert self.log_dir is not None
        return self.log_dir / f"worker-{index}.log"

    def logs(self, tail_chars: int | None = None) -> str:
        """Every worker's log, each cut to its last ``tail_chars`` characters."""
        assert self.log_dir is not None
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
        for process in self.processes:
            if process.poll() is None:
                process.terminate()  # a warm shutdown: the main process stops its pool
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        self.commands.clear()


def free_port() -> int:
    import socket

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
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


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
            import shutil
            import tempfile

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
        import shutil

        self.stop("immediate")
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
