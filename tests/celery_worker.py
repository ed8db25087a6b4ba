"""A real ``celery worker`` subprocess for tests: started on a private queue, waited for until it
says it is ready, stopped (SIGTERM, then SIGKILL) or killed as a whole process group.

One launcher for every suite that needs workers (the engine's, the outbox's, the egress load
tests): the command line, the readiness wait and the process-group handling live here once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class CeleryWorker:
    """``celery -A berrys_portal worker`` on ``queue`` with ``env``; its output goes to ``log_path``
    (appended: a restarted worker counts only its own "ready" line)."""

    def __init__(self, queue: str, env: dict[str, str], log_path: Path, *, concurrency: int = 2,
                 pool: str = "prefork") -> None:
        self.queue = queue
        self.env = env
        self.log_path = Path(log_path)
        self.concurrency = concurrency
        self.pool = pool
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> CeleryWorker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        already = self.log_path.read_bytes().count(b" ready.") if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "berrys_portal", "worker", "-P", self.pool,
                 "-c", str(self.concurrency), "-Q", self.queue, "-n", f"{self.queue}-{uuid.uuid4().hex[:4]}@%h",
                 "--without-heartbeat", "--without-gossip", "--without-mingle",
                 "--loglevel", "INFO"],  # INFO: the " ready." line start() waits for
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while self.log_path.read_bytes().count(b" ready.") <= already:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready after {timeout:g} s:\n{self.log_text()}")
            time.sleep(0.1)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the worker and its pool children (the whole process group)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (a warm shutdown: running tasks finish), SIGKILL after ``timeout`` seconds."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
