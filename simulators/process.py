"""Start the simulators as a real child process and drive their control API.

Used by the tests and the demo driver: ``SimulatorProcess.start(...)`` runs
``python -m simulators`` with ephemeral ports, waits for its READY line, and
offers ``faults()`` / ``state()`` helpers over the control port.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests


class ControlClient:
    """Talks to a running stack's control port (see ``simulators.runner``)."""

    def __init__(self, control_url: str):
        self.control_url = control_url.rstrip("/")

    def faults(self, service: str, **knobs: Any) -> dict[str, Any]:
        response = requests.post(f"{self.control_url}/services/{service}/faults", json=knobs, timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self, service: str) -> dict[str, Any]:
        return self.faults(service, reset=True)

    def state(self, service: str) -> dict[str, Any]:
        response = requests.get(f"{self.control_url}/services/{service}/state", timeout=10)
        response.raise_for_status()
        return response.json()

    def describe(self) -> dict[str, Any]:
        response = requests.get(f"{self.control_url}/services", timeout=10)
        response.raise_for_status()
        return response.json()


@dataclass
class SimulatorProcess(ControlClient):
    proc: subprocess.Popen
    ready: dict[str, Any]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        ControlClient.__init__(self, self.ready["control_url"])

    @property
    def urls(self) -> dict[str, str]:
        """Service type → base URL."""
        return {svc["type"]: svc["url"] for svc in self.ready["services"]}

    @classmethod
    def start(
        cls, *, portal_url: str | None = None, api_key: str | None = None,
        only: list[str] | None = None, heartbeat: float = 10.0, timeout: float = 30.0,
        extra_env: dict[str, str] | None = None,
    ) -> SimulatorProcess:
        cmd = [sys.executable, "-m", "simulators", "--base-port", "0", "--heartbeat", str(heartbeat)]
        if portal_url:
            cmd += ["--portal", portal_url]
        if only:
            cmd += ["--only", ",".join(only)]
        env = {**os.environ, **(extra_env or {})}
        if api_key:
            env["SIMULATORS_API_KEY"] = api_key
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        lines: list[str] = []
        ready_queue: queue.Queue[dict[str, Any]] = queue.Queue()

        def pump() -> None:
            # Keep draining output so the child never blocks on a full pipe.
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip())
                if line.startswith("SIMULATORS READY "):
                    # raw_decode: another thread's log line may have been written onto the
                    # same line right after the JSON (seen under load): ignore what follows it.
                    ready_queue.put(json.JSONDecoder().raw_decode(line[len("SIMULATORS READY "):])[0])

        threading.Thread(target=pump, daemon=True).start()
        try:
            ready = ready_queue.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            proc.wait()
            raise RuntimeError("simulators did not start:\n" + "\n".join(lines)) from None
        return cls(proc=proc, ready=ready, lines=lines)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def wait_for_output(self, text: str, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            time.sleep(0.05)
        return False
