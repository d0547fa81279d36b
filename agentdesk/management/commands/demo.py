"""Run the whole product in the foreground: model simulator, Celery worker, web server.

``make demo`` migrates and seeds first, then calls this. Ctrl-C stops everything it
started. Works in either mode: with nothing configured it uses SQLite and the filesystem
broker; with DATABASE_URL and REDIS_URL it uses those.

The worker is supervised as production's must be (docs/deployment.md): Celery can exit
with "Unrecoverable error" when its broker connection drops, and a worker can be killed.
A worker that exits is started again, up to ``MAX_RESTARTS`` times a minute; the
simulator or the web server exiting still stops the demo.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import suppress
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentdesk.roles import DEMO_ACCOUNTS

SUPERVISED = "worker"
MAX_RESTARTS = 5  # a minute; more means the worker cannot start, and restarting is no help


def worker_pool() -> list[str]:
    """The demo worker's pool options: production's with Redis, prefork without.

    With REDIS_URL set the demo's worker runs like a production one (docs/concurrency.md):
    the threads pool, 150 threads. The embedded mode's filesystem broker cannot take that:
    it creates a message file before it writes into it, and its reader does not wait for
    the writer's lock, so a worker whose own threads publish while its consumer reads soon
    reads an empty message and stops ("Unrecoverable error: JSONDecodeError"): with 50 and
    with 150 threads, within four minutes of 100 runs. Two prefork children publish from
    processes of their own, which write right after they create the file; 100 runs went
    through without it.
    """
    if settings.REDIS_URL:
        return ["--pool", "threads", "--concurrency", "150"]
    return ["--pool", "prefork", "--concurrency", "2"]


class Command(BaseCommand):
    help = "Start the model simulator, a Celery worker (with beat) and the ASGI web server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--simulator-port", type=int, default=8001)
        parser.add_argument(
            "--latency-ms",
            type=int,
            default=400,
            help="simulated model latency, so steps can be watched",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        simulator_url = f"http://127.0.0.1:{options['simulator_port']}/v1"
        env = {**os.environ, "AGENTDESK_LLM_BASE_URL": simulator_url}
        # Websockets are accepted only from the origin people open the site at.
        env.setdefault("AGENTDESK_BASE_URL", f"http://{options['host']}:{options['port']}")
        beat_schedule = settings.DATA_DIR / "celerybeat-schedule"
        commands = {
            "simulator": [
                *manage,
                "simulate_llm",
                "--port",
                str(options["simulator_port"]),
                "--latency-ms",
                str(options["latency_ms"]),
            ],
            "worker": [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "agentdesk",
                "worker",
                "--beat",
                "--schedule",
                str(beat_schedule),
                "--loglevel",
                "INFO",
                *worker_pool(),
            ],
            "web": [*manage, "runserver", f"{options['host']}:{options['port']}", "--noreload"],
        }
        processes: dict[str, subprocess.Popen[bytes]] = {}

        def start(name: str) -> None:
            # The worker in a process group of its own: a dead worker's pool children are
            # stopped with it before it is started again.
            processes[name] = subprocess.Popen(
                commands[name], env=env, start_new_session=name == SUPERVISED
            )

        def stop(*_: Any) -> None:
            for process in processes.values():
                if process.poll() is None:
                    process.terminate()
            for name, process in processes.items():
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                if name == SUPERVISED:
                    _kill_group(process)

        # Ctrl-C and SIGTERM both stop everything, even when this process was started with
        # SIGINT ignored (as a shell does for background jobs).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            for name in commands:
                start(name)
            self._wait_for(f"{simulator_url[:-3]}/healthz", list(processes.values()))
            url = f"http://{options['host']}:{options['port']}/"
            self._wait_for(f"{url}login/", list(processes.values()))
            self._banner(url)
            restarts: list[float] = []
            while True:
                time.sleep(0.5)
                ended = [name for name, p in processes.items() if p.poll() is not None]
                if not ended:
                    continue
                if ended != [SUPERVISED]:
                    raise CommandError(f"{', '.join(ended)} stopped; stopping the rest")
                now = time.monotonic()
                restarts = [moment for moment in restarts if moment > now - 60]
                if len(restarts) >= MAX_RESTARTS:
                    raise CommandError(
                        f"the worker exited {MAX_RESTARTS + 1} times within a minute; "
                        "see its output above; stopping the rest"
                    )
                restarts.append(now)
                worker = processes[SUPERVISED]
                self.stderr.write(
                    f"The worker exited (code {worker.returncode}); starting it again."
                )
                _kill_group(worker)
                start(SUPERVISED)
        except KeyboardInterrupt:
            self.stdout.write("\nStopping…")
        finally:
            stop()

    def _wait_for(self, url: str, processes: list[subprocess.Popen[bytes]]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(process.poll() is not None for process in processes):
                raise CommandError("a process exited during start-up; see its output above")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise CommandError(f"{url} did not answer within 60 s")

    def _banner(self, url: str) -> None:
        lines = ["", "=" * 64, f"  AgentDesk is running at {url}", "", "  Logins:"]
        lines += [f"    {u:<9} / {p:<14} ({r or 'admin'})" for u, p, r in DEMO_ACCOUNTS]
        lines += [
            "",
            "  Submit a run at " + url + "runs/new/",
            "  Ctrl-C stops everything.",
            "=" * 64,
            "",
        ]
        self.stdout.write("\n".join(lines))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of the process's group (a dead prefork worker's children)."""
    with suppress(ProcessLookupError, PermissionError):  # the whole group is gone already
        os.killpg(process.pid, signal.SIGKILL)
