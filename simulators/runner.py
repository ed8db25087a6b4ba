"""Run several simulated services in one process, with one control port for all of them.

Each service has its own port and its own ``/_control``; the stack adds a
control server of its own because a service whose knob is ``down: "refuse"``
has closed its port and can no longer be reached there.

Control API (JSON):
    GET  /services                      every service: type, url, registered id, faults
    POST /services/{slug|TYPE}/faults   set knobs: {"latency_ms", "error_rate", "down", "hang", "reset"}
    GET  /services/{slug|TYPE}/state    the service's in-memory store
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler
from typing import Any

from simulators.core import HttpError, PortalRegistration, SimulatedService, _Server, send_json
from simulators.services import ALL_SERVICES, BY_TYPE

logger = logging.getLogger("simulators")


class SimulatorStack:
    def __init__(
        self, *, portal_url: str | None, api_key: str | None, base_port: int = 0,
        types: list[str] | None = None, heartbeat_seconds: float = 10.0, host: str = "127.0.0.1",
    ):
        chosen = [BY_TYPE[t] for t in types] if types else list(ALL_SERVICES)
        self.host = host
        self.base_port = base_port
        self.services: list[SimulatedService] = []
        for cls in chosen:
            # Fixed ports follow the canonical order, so PC is always base+0, TI base+4.
            port = base_port + ALL_SERVICES.index(cls) if base_port else 0
            self.services.append(cls(host=host, port=port))
        self.registrations: list[PortalRegistration] = []
        self.portal_url = portal_url
        self.api_key = api_key
        self.heartbeat_seconds = heartbeat_seconds
        self._control: _Server | None = None

    def find(self, name: str) -> SimulatedService:
        for svc in self.services:
            if name in (svc.slug, svc.service_type):
                return svc
        raise HttpError(404, f"No simulated service {name!r}")

    def start(self) -> None:
        for svc in self.services:
            svc.start()
        control_port = self.base_port + len(ALL_SERVICES) if self.base_port else 0
        self._control = _Server((self.host, control_port), _control_handler(self))
        threading.Thread(target=self._control.serve_forever, kwargs={"poll_interval": 0.1},
                         name="sim-control", daemon=True).start()
        if self.portal_url and self.api_key:
            for svc in self.services:
                registration = PortalRegistration(
                    svc, portal_url=self.portal_url, api_key=self.api_key,
                    heartbeat_seconds=self.heartbeat_seconds,
                )
                registration.start()
                self.registrations.append(registration)

    @property
    def control_url(self) -> str:
        assert self._control is not None
        return f"http://{self.host}:{self._control.server_address[1]}"

    def wait_registered(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for registration in self.registrations:
            if not registration.registered.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def describe(self) -> dict[str, Any]:
        by_service = {r.service.slug: r for r in self.registrations}
        return {
            "control_url": self.control_url if self._control else None,
            "services": [
                {
                    "slug": svc.slug, "type": svc.service_type, "url": svc.url,
                    "listening": svc.listening, "faults": asdict(svc.faults),
                    "service_id": getattr(by_service.get(svc.slug), "service_id", None),
                }
                for svc in self.services
            ],
        }

    def stop(self) -> None:
        # Deregister first (in parallel: each may wait on a slow portal), then close ports.
        threads = [threading.Thread(target=r.stop) for r in self.registrations]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=8)
        for svc in self.services:
            svc.stop()
        if self._control is not None:
            self._control.shutdown()
            self._control.server_close()
            self._control = None


_CONTROL_ROUTE = re.compile(r"^/services/(?P<name>[\w-]+)/(?P<what>faults|state)/?$")


def _control_handler(stack: SimulatorStack) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, fmt: str, *args: Any) -> None:
            logger.debug("control %s", fmt % args)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
                status, payload = self._dispatch(body)
            except ValueError:
                status, payload = 400, {"detail": "Body is not valid JSON"}
            except HttpError as exc:
                status, payload = exc.status, exc.body
            send_json(self, status, payload)

        def _dispatch(self, body: Any) -> tuple[int, Any]:
            path = self.path.split("?", 1)[0]
            if path.rstrip("/") == "/services" and self.command == "GET":
                return 200, stack.describe()
            found = _CONTROL_ROUTE.match(path)
            if not found:
                raise HttpError(404, f"No control route {self.command} {path}")
            svc = stack.find(found["name"])
            if found["what"] == "state" and self.command == "GET":
                return svc.state()
            if found["what"] == "faults" and self.command in ("GET", "POST"):
                if self.command == "POST":
                    svc.set_faults(body)
                return 200, {"service": svc.slug, "faults": asdict(svc.faults),
                             "listening": svc.listening}
            raise HttpError(405, f"Method {self.command} not allowed on {path}")

        do_GET = do_POST = _handle

    return _Handler
