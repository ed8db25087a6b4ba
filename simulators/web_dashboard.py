"""The Web Dashboard, simulated: the guide's caller that starts workflows and relays human questions.

    python -m simulators.web_dashboard --portal http://127.0.0.1:8090 --api-key-file var/demo/api.key --port 8107

A WEB_DASHBOARD service of its own (own process, own port, so the five core services'
ports and control port stay where they are). It registers, heartbeats and calls the portal
through the client package (``clients/python``, ``berrys_client``: ``PortalRegistration``
and a ``SyncServiceClient`` with the portal as its one instance, so its calls get the
package's breaker, retries and ``Idempotency-Key`` pass-through), and it
makes every row of the guide's dependency table exist (Project Creation and Human
Interaction require a Web Dashboard). Endpoints:

- ``POST /chat/projects`` ``{"name", "description"}``: starts ``project_creation`` through
  the portal's API with the chat's payload (``status: "PLANNING"``, the guide's chat bug
  that the portal's request adapter fixes); answers the run.
- ``GET /questions``: the human questions waiting for an answer (waiting
  ``human_interaction`` runs), as a dashboard would show them.
- ``POST /questions/{run_id}/answer`` ``{"answer"}``: relays the answer
  (``POST /workflows/runs/{id}/signal``).
"""

from __future__ import annotations

import argparse
import json as _json
import logging
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from berrys_client import ServiceConnectionError, ServiceResponseError, ServiceType
from berrys_client.sync import SyncServiceClient

from simulators.core import HttpError, PortalRegistration, Request, SimulatedService

logger = logging.getLogger("simulators.web_dashboard")


class WebDashboard(SimulatedService):
    service_type = ServiceType.WEB_DASHBOARD
    slug = "web-dashboard"
    capabilities = ("chat", "human-questions")

    def __init__(self, *, portal_url: str, api_key: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.portal_url = portal_url.rstrip("/")
        # The portal as the client's one instance: one breaker for it, retries for GETs and
        # for POSTs that carry an Idempotency-Key (the portal dedupes a repeated start).
        self.portal = {"id": "portal", "url": self.portal_url}
        self.auth = {"Authorization": f"Token {api_key}"}
        self.client = SyncServiceClient(retries=2, backoff=0.2)
        super().__init__(host=host, port=port)

    def setup_routes(self) -> None:
        self.store = {"started": []}
        self.route("POST", "/chat/projects", self.chat_project)
        self.route("GET", "/questions", self.questions)
        self.route("POST", "/questions/{run_id}/answer", self.answer)

    def _portal(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                idempotency_key: str | None = None) -> Any:
        try:
            return self.client.request(method, service=self.portal, endpoint=path, data=json, params=params,
                                       headers=self.auth, idempotency_key=idempotency_key)
        except ServiceResponseError as exc:  # the portal's refusal, passed on to our caller
            body = exc.body if isinstance(exc.body, str) else _json.dumps(exc.body)
            raise HttpError(exc.status, body[:500]) from exc
        except ServiceConnectionError as exc:
            raise HttpError(502, f"Portal unreachable: {exc.__class__.__name__}") from exc

    def chat_project(self, request: Request) -> tuple[int, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        if not body.get("name"):
            raise HttpError(422, "Missing field(s): name")
        run = self._portal("POST", "/workflows/runs", json={
            "workflow": "project_creation",
            "input": {"name": body["name"], "description": body.get("description", ""), "status": "PLANNING"},
        }, idempotency_key=body.get("request_id") or str(uuid.uuid4()))
        with self.lock:
            self.store["started"].append(run["id"])
        return 201, {"run_id": run["id"], "status": run["status"]}

    def questions(self, request: Request) -> tuple[int, Any]:
        page = self._portal("GET", "/workflows/runs", params={"workflow": "human_interaction", "status": "waiting"})
        out = []
        for run in page.get("results", []):
            detail = self._portal("GET", f"/workflows/runs/{run['id']}")
            out.append({"run_id": run["id"], "agent_id": detail["input"].get("agent_id"),
                        "question": detail["input"].get("question")})
        return 200, {"questions": out}

    def answer(self, request: Request) -> tuple[int, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        if not isinstance(body.get("answer"), str) or not body["answer"].strip():
            raise HttpError(422, "Missing field(s): answer")
        run = self._portal("POST", f"/workflows/runs/{request.match['run_id']}/signal",
                           json={"data": {"answer": body["answer"]}})
        return 200, {"run_id": run["id"], "status": run["status"]}


def register_until_up(dashboard: WebDashboard, *, portal_url: str, api_key: str,
                      stop: threading.Event, heartbeat_seconds: float = 10.0) -> PortalRegistration | None:
    """Register through the client package (waiting while the portal starts), then heartbeat.

    None if ``stop`` is set first (the registration that was waiting is ended)."""
    registration = PortalRegistration(dashboard, portal_url=portal_url, api_key=api_key,
                                      heartbeat_seconds=heartbeat_seconds)
    registration.start()
    while not stop.is_set():
        if registration.registered.wait(0.2):
            return registration
    registration.stop()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.web_dashboard", description=__doc__.split("\n")[0])
    parser.add_argument("--portal", required=True)
    parser.add_argument("--api-key-file", type=Path, required=True,
                        help="A key with registry:write and workflows (make demo writes var/demo/api.key).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per heartbeat is noise
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    api_key = ""
    while not api_key and not stop.is_set():  # make demo writes the key as the stack starts
        try:
            api_key = args.api_key_file.read_text().strip()
        except OSError:
            time.sleep(0.5)
    dashboard = WebDashboard(portal_url=args.portal, api_key=api_key, port=args.port)
    dashboard.start()
    print(f"WEB DASHBOARD READY {dashboard.url}", flush=True)
    registration = register_until_up(dashboard, portal_url=args.portal, api_key=api_key, stop=stop)
    stop.wait()
    if registration is not None:
        registration.stop()  # deregister first, then close the port
    dashboard.stop()
    dashboard.client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
