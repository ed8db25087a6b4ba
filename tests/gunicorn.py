"""A real gunicorn on the portal's own config, for the tests that need the production web server.

One starter for every such test: it runs ``berrys_portal/gunicorn_conf.py`` against the test
database, waits until gunicorn listens (and, if asked, until its workers booted), and stops the
whole process group afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.dbenv import test_database_url

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Gunicorn:
    port: int
    env: dict[str, str]
    log: Path
    workers: list[int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def gunicorn_running(tmp_path: Path, *, workers: int = 1, env: dict[str, str] | None = None,
                     bind: bool = True) -> Iterator[Gunicorn]:
    """gunicorn with ``workers`` workers on an ephemeral loopback port (``bind=False``: where
    ``PORTAL_BIND`` in ``env`` says). ``PROMETHEUS_MULTIPROC_DIR`` defaults to ``tmp_path/prom``."""
    prom_dir = tmp_path / "prom"  # emptied by gunicorn's on_starting: not where the log goes
    prom_dir.mkdir(exist_ok=True)
    full_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "berrys_portal.settings_test",
        "DATABASE_URL": test_database_url(),
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
        "PYTHONPATH": str(ROOT),
        "WEB_CONCURRENCY": str(workers),
        **(env or {}),
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "berrys_portal/gunicorn_conf.py"]
    if bind:
        command += ["--bind", "127.0.0.1:0"]
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command + ["berrys_portal.wsgi:application"], cwd=ROOT, env=full_env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            text = log_path.read_text(errors="replace")
            port = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text)
            booted = [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", text)]
            if port and len(booted) >= workers:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{text[-3000:]}")
            time.sleep(0.2)
        yield Gunicorn(port=int(port.group(1)), env=full_env, log=log_path, workers=booted)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
