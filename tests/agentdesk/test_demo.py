"""`make demo`'s last command: everything starts, serves, and stops on Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.processes import ROOT, embedded_env

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    web, sim = _free_port(), _free_port()
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
