"""`make demo`'s last command: everything starts, serves, and stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.processes import ROOT, embedded_env, free_port

pytestmark = pytest.mark.slow


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.add(int(entry.name))
    return found


def test_demo_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    env = embedded_env(tmp_path, AGENTDESK_DEBUG="true")
    manage = [sys.executable, "manage.py"]
    for command in (["migrate", "--no-input"], ["seed_demo"]):
        subprocess.run(
            [*manage, *command], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120
        )
    web, sim = free_port(), free_port()
    demo = subprocess.Popen(
        [*manage, "demo", "--port", str(web), "--simulator-port", str(sim)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = ""
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything" not in banner and time.monotonic() < deadline:
            line = demo.stdout.readline() if demo.stdout else ""
            if not line and demo.poll() is not None:
                break
            banner += line
        assert f"AgentDesk is running at http://127.0.0.1:{web}/" in banner
        assert "operator  / operator-demo" in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/login/", timeout=10) as response:
            assert response.status == 200
        started = _children(demo.pid)
        assert len(started) == 3  # simulator, worker, web server

        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0
    assert all(
        not Path(f"/proc/{pid}").exists()
        or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        for pid in started
    )


def _cmdline(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}") / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _worker_pid(demo_pid: int) -> int | None:
    workers = [pid for pid in _children(demo_pid) if " celery " in f" {_cmdline(pid)} "]
    alive = [pid for pid in workers if "Z" not in _state(pid)]
    return alive[0] if len(alive) == 1 else None


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_the_demo_starts_a_worker_again_when_it_dies(tmp_path: Path) -> None:
    """Invariant 10: a dead worker is brought back, and runs go on through the new one."""
    env = embedded_env(tmp_path, AGENTDESK_DEBUG="true")
    manage = [sys.executable, "manage.py"]
    for command in (["migrate", "--no-input"], ["seed_demo"]):
        subprocess.run(
            [*manage, *command], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120
        )
    web, sim = free_port(), free_port()
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        demo = subprocess.Popen(
            [
                *manage,
                "demo",
                *("--port", str(web), "--simulator-port", str(sim)),
                *("--latency-ms", "0"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything" not in log_path.read_text(errors="replace"):
            assert demo.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)
        first = _worker_pid(demo.pid)
        assert first is not None

        os.killpg(first, signal.SIGKILL)  # the worker and its pool children, as a crash

        second = None
        deadline = time.monotonic() + 30
        while (second is None or second == first) and time.monotonic() < deadline:
            time.sleep(0.3)
            second = _worker_pid(demo.pid)
        assert second is not None, log_path.read_text()
        assert second != first, log_path.read_text()
        assert demo.poll() is None
        assert "The worker exited (code -9); starting it again." in log_path.read_text()
        email = (
            subprocess.run(
                [
                    *manage,
                    "shell",
                    "-c",
                    "from examples.support.models import Ticket; "
                    "print(Ticket.objects.get(ticket_id='T-0002').customer_email)",
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        ticket = {
            "ticket_id": "T-0002",
            "customer_email": email,
            "subject": "Broken mug",
            "body": "My mug arrived broken.",
        }
        submitted = subprocess.run(
            [
                *manage,
                "submit_run",
                "--agent",
                "support",
                "--input",
                json.dumps(ticket),
                *("--wait", "90"),
            ],
            cwd=ROOT,
            env={**env, "AGENTDESK_LLM_BASE_URL": f"http://127.0.0.1:{sim}/v1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submitted.returncode == 0, submitted.stderr
        final = submitted.stdout.strip().splitlines()[-1]
        assert '"state": "waiting_for_approval"' in final or '"state": "succeeded"' in final

        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0
    assert _state(second) in ("gone", "Z")
