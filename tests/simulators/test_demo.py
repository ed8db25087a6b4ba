"""Smoke test of `make demo`: a clean clone, the embedded defaults, every process, Ctrl-C, twice.

The clone is of the worktree's last commit (``git clone``), so this checks what
is committed. It reuses this checkout's virtualenv through a symlink, creates the
SQLite schema (untimed), and runs ``make demo-run`` (``make demo`` minus the
install step) on free ports, with no
DATABASE_URL / REDIS_URL / CELERY_BROKER_URL: SQLite and the filesystem broker
under the clone's var/. The demo driver's "DEMO READY" summary means the
services registered, runs of every workflow were started, and the first ones
completed through a real worker. Bounds: 120 s for make's preparation steps, then
90 s from the stack's start to DEMO READY.

make runs on a pseudo-terminal and is stopped the way a person stops it: the
Ctrl-C character typed into the terminal (the terminal driver then signals the
foreground process group). It must exit 0 with no process of the demo left.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
READY_WITHIN = 90.0  # from the stack's start to the driver's DEMO READY
PREPARE_WITHIN = 120.0
STOP_WITHIN = 25.0  # the stack's grace (20 s) and a margin

pytestmark = pytest.mark.slow


def _ports_free(first: int, count: int) -> bool:
    for port in range(first, first + count):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_block(count: int) -> int:
    for _ in range(50):
        first = random.randrange(20000, 60000)
        if _ports_free(first, count):
            return first
    raise RuntimeError("no free block of ports")


def _embedded_env(clone: Path) -> dict[str, str]:
    """This process's environment minus everything that points at the test's PostgreSQL and Redis."""
    env = {k: v for k, v in os.environ.items() if k not in {
        "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "WORKFLOW_QUEUE",
        "WORKFLOW_DEFINITION_MODULES", "PORTAL_VAR_DIR", "PORT",
        # settings_test puts these in this process's environment; a newcomer's shell has none.
        "DJANGO_ENV", "PROMETHEUS_MULTIPROC_DIR", "SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS", "BREAKER_STORE",
    }}
    env["PYTHONPATH"] = str(clone)
    return env


@pytest.fixture
def clean_clone(tmp_path):
    if shutil.which("make") is None or shutil.which("git") is None:
        pytest.skip("make and git are needed for the demo smoke test")
    clone = tmp_path / "portal"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=60)
    (clone / ".venv").symlink_to(ROOT / ".venv")
    # Creating the SQLite schema is slow on a loaded machine and not what the bound is
    # about: do it untimed here (make demo-run migrates again, which is then a no-op).
    subprocess.run([str(clone / ".venv" / "bin" / "python"), "manage.py", "migrate", "--noinput", "-v0"],
                   cwd=clone, env=_embedded_env(clone), check=True, timeout=300)
    return clone


class DemoOnTerminal:
    """``make demo-run`` on a pseudo-terminal of its own (its controlling terminal)."""

    def __init__(self, clone: Path, portal_port: int, base_port: int):
        self.clone = clone
        self.lines: list[str] = []
        self.times: list[float] = []  # when each line was read (time.monotonic())
        self.events: queue.Queue[str] = queue.Queue()
        self.stack_started = threading.Event()
        self.master, slave = os.openpty()

        def controlling_tty():  # runs in the child after setsid: the pty becomes its terminal
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            ["make", "demo-run", f"PORT={portal_port}", f"SIMULATORS_BASE_PORT={base_port}"],
            cwd=clone, env=_embedded_env(clone), stdin=slave, stdout=slave, stderr=slave,
            start_new_session=True, preexec_fn=controlling_tty,
        )
        os.close(slave)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every writer on the terminal has gone
                break
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace").rstrip("\r")
                self.times.append(time.monotonic())
                self.lines.append(line)
                if "DEMO READY" in line or "DEMO FAILED" in line or "What to click" in line:
                    self.events.put(line)
                elif "Starting the demo" in line:
                    self.stack_started.set()

    def seen_at(self, text: str) -> float | None:
        """When the first line containing ``text`` was read, or None."""
        return next((at for at, line in zip(self.times, self.lines, strict=False) if text in line), None)

    def output(self, last: int = 60) -> str:
        """The last lines, and the last few of each process (a worker's start-up banner
        must not hide what the driver said)."""
        plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in self.lines]
        by_process: dict[str, list[str]] = {}
        for line in plain:
            name = line[9:].split("|", 1)[0].strip() if "|" in line[:30] else "make"
            by_process.setdefault(name, []).append(line)
        tails = "\n".join(line for lines in by_process.values() for line in lines[-8:])
        return "\n".join(plain[-last:]) + "\n--- the last lines of each process ---\n" + tails

    def wait_ready(self) -> str:
        if not self.stack_started.wait(PREPARE_WITHIN):
            pytest.fail(f"make demo-run did not start the stack within {PREPARE_WITHIN:.0f} s:\n" + self.output(40))
        started = time.monotonic()
        try:
            first_event = self.events.get(timeout=READY_WITHIN)
        except queue.Empty:
            pytest.fail(f"no DEMO READY within {READY_WITHIN:.0f} s:\n" + self.output())
        assert "DEMO READY" in first_event, self.output()
        self.events.get(timeout=10)  # the summary is complete once "What to click" is out
        print(f"demo ready after {time.monotonic() - started:.1f} s")
        return "\n".join(self.lines)

    def ctrl_c(self) -> tuple[int, float]:
        """Type Ctrl-C; the exit code and how long the stop took."""
        started = time.monotonic()
        os.write(self.master, b"\x03")
        try:
            rc = self.proc.wait(timeout=STOP_WITHIN)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the demo did not stop within {STOP_WITHIN:.0f} s of Ctrl-C:\n" + self.output(40))
        return rc, time.monotonic() - started

    def kill(self) -> None:
        for pid in _demo_processes(self.clone):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.master)


def _demo_processes(clone: Path) -> list[int]:
    """Every process working in the clone (web, worker and its pool, beat, simulators, driver)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")) == clone:
                    found.append(int(entry.name))
    return found


def _run_ids(summary: str) -> dict[str, str]:
    ids = {}
    for line in summary.splitlines():
        parts = re.sub(r"\x1b\[[0-9;]*m", "", line).split("| ", 1)[-1].split()  # after "time name |"
        if len(parts) >= 3 and parts[0] in ("project_creation", "project_planning", "human_interaction"):
            ids.setdefault(parts[0], parts[2])
    return ids


def _admin_session(portal: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{portal}/admin/login/", timeout=10)
    response = session.post(f"{portal}/admin/login/?next=/admin/", timeout=10, data={
        "username": "operator", "password": "berrys-demo",
        "csrfmiddlewaretoken": session.cookies["csrftoken"],
    }, headers={"Referer": f"{portal}/admin/login/"})
    assert response.status_code == 200 and "Log out" in response.text
    return session


def test_make_demo_starts_on_the_embedded_defaults_stops_on_ctrl_c_and_restarts_cleanly(clean_clone):
    first = _free_block(9)  # portal, 5 simulators, control, web dashboard, watch server
    portal_port, base_port = first, first + 1
    portal = f"http://127.0.0.1:{portal_port}"

    # --- The first start ---------------------------------------------------------------
    demo = DemoOnTerminal(clean_clone, portal_port, base_port)
    try:
        summary = demo.wait_ready()
        assert "project_creation      succeeded" in summary
        assert "agent_task_execution  succeeded" in summary
        assert "agent_task_execution  failed" in summary  # the injected fault, left for the operator
        assert "human_interaction     waiting" in summary
        assert "passing 5/5" in summary  # every service passed its health check before the runs
        assert "Traceback" not in summary
        assert (clean_clone / "var" / "portal.sqlite3").exists()
        assert list((clean_clone / "var" / "broker").iterdir())  # the filesystem broker carried the steps
        key = (clean_clone / "var" / "demo" / "api.key").read_text()
        session = _admin_session(portal)
        status = subprocess.run(["make", "-s", "demo-status", f"PORT={portal_port}"], cwd=clean_clone,
                                env=_embedded_env(clean_clone), capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "DEMO READY" in status.stdout and "Login:  operator" in status.stdout
        assert "model-orchestration" in status.stdout
        first_ids = _run_ids(summary)
        # Idle, the stack prints nothing per poll: no heartbeat access lines, no beat / worker
        # INFO line per scheduled task (heartbeats every 10 s, a health sweep every 5 s).
        ready_at = demo.seen_at("What to click")
        time.sleep(max(0.0, ready_at + 12 - time.monotonic()))
        idle = demo.lines[len(summary.splitlines()):]
        routine = [line for line in idle if re.search(
            r"/heartbeat|Sending due task|Task \S+ received|Task \S+ succeeded", line)]
        assert routine == [], "\n".join(routine)
    except BaseException:
        demo.kill()
        raise
    finally:
        if demo.proc.poll() is None:
            rc, took = demo.ctrl_c()
        demo.close()
    assert rc == 0, f"make exited {rc} after Ctrl-C:\n" + demo.output(30)
    print(f"stopped {took:.1f} s after Ctrl-C")
    assert "Error" not in demo.output(30) and "SIGKILL" not in demo.output(30)
    assert _demo_processes(clean_clone) == [], "processes left running after Ctrl-C"
    assert not (clean_clone / "control").exists()  # kombu's exchange table lives under var/broker

    # --- The second start on the same clone -----------------------------------------------
    demo = DemoOnTerminal(clean_clone, portal_port, base_port)
    try:
        summary = demo.wait_ready()
        assert "project_creation      succeeded" in summary
        second_ids = _run_ids(summary)
        assert second_ids["project_creation"] != first_ids["project_creation"]  # a new run, not the old one
        assert "Demo API key" in summary and "reused" in summary
        assert (clean_clone / "var" / "demo" / "api.key").read_text() == key
        assert "Demo operator operator kept" in summary
        # The operator's browser session of the first start is still logged in.
        assert "Log out" in session.get(f"{portal}/admin/", timeout=10).text
        # The new project is planned by a new project_planning run, which completes.
        api = requests.Session()
        api.headers["Authorization"] = f"Token {key.strip()}"
        creation = api.get(f"{portal}/workflows/runs/{second_ids['project_creation']}", timeout=10).json()
        planning_id = creation["context"]["planning"]["run_id"]
        assert planning_id != first_ids["project_planning"]
        deadline = time.monotonic() + 60
        while (planning := api.get(f"{portal}/workflows/runs/{planning_id}", timeout=10).json())["status"] not in (
                "succeeded", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert planning["status"] == "succeeded", planning
        assert planning["context"]["project_id"] == creation["context"]["project_id"]
        first_creation = api.get(f"{portal}/workflows/runs/{first_ids['project_creation']}", timeout=10).json()
        assert creation["context"]["project_id"] != first_creation["context"]["project_id"]
        keys = subprocess.run(
            [str(clean_clone / ".venv" / "bin" / "python"), "manage.py", "shell", "-c",
             "from registry.models import ApiKey; print(ApiKey.objects.filter(name='demo').count())"],
            cwd=clean_clone, env=_embedded_env(clean_clone), capture_output=True, text=True, timeout=60)
        assert keys.stdout.strip().splitlines()[-1] == "1"  # one demo key, not one per start
    except BaseException:
        demo.kill()
        raise
    finally:
        if demo.proc.poll() is None:
            rc, took = demo.ctrl_c()
        demo.close()
    assert rc == 0, f"make exited {rc} after Ctrl-C:\n" + demo.output(30)
    assert _demo_processes(clean_clone) == [], "processes left running after Ctrl-C"
