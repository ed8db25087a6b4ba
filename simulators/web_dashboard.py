"""The Web Dashboard, simulated: the guide's caller that starts workflows and relays human questions.

    python -m simulators.web_dashboard --portal http://127.0.0.1:8090 --api-key-file var/demo/api.key --port 8107

A WEB_DASHBOARD service of its own (own process, own port, so the five core services'
ports and control port stay where they are). It registers through the client package
(``clients/python``, ``berrys_client``), so the demo proves that package too, and it
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
import logging
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from simulators.core import HttpError, Request, SimulatedService

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))
from berrys_client import ServiceType  # noqa: E402 - the client package, from this repository
from berrys_client.sync import SyncServiceRegistration  # noqa: E402

logger = logging.getLogger("simulators.web_dashboard")


class WebDashboard(SimulatedService):
    service_type = ServiceType.WEB_DASHBOARD
    slug = "web-dashboard"
    capabilities = ("chat", "human-questions")

    def __init__(self, *, portal_url: str, api_key: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.portal_url = portal_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {api_key}"
        super().__init__(host=host, port=port)

    def setup_routes(self) -> None:
        self.store = {"started": []}
        self.route("POST", "/chat/projects", self.chat_project)
        self.route("GET", "/questions", self.questions)
        self.route("POST", "/questions/{run_id}/answer", self.answer)

    def _portal(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self.session.request(method, self.portal_url + path, timeout=10, **kw)
        except requests.RequestException as exc:
            raise HttpError(502, f"Portal unreachable: {exc.__class__.__name__}") from exc
        if response.status_code >= 400:
            raise HttpError(response.status_code, response.text[:500])
        return response.json()

    def chat_project(self, request: Request) -> tuple[int, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        if not body.get("name"):
            raise HttpError(422, "Missing field(s): name")
        run = self._portal("POST", "/workflows/runs", json={
            "workflow": "project_creation",
            "input": {"name": body["name"], "description": body.get("description", ""), "status": "PLANNING"},
        }, headers={"Idempotency-Key": body.get("request_id") or str(uuid.uuid4())})
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
                      stop: threading.Event) -> SyncServiceRegistration | None:
    """Register through the client package, retrying while the portal starts."""
    delay = 0.5
    while not stop.is_set():
        registration = SyncServiceRegistration(
            portal_url, api_key, name=dashboard.slug, type=dashboard.service_type, url=dashboard.url,
            health_url=f"{dashboard.url}/health", metadata={"version": dashboard.version},
            capabilities=list(dashboard.capabilities), endpoints=dashboard.endpoints(),
        )
        try:
            registration.start()
            logger.info("web-dashboard registered with the portal as id %s", registration.service_id)
            return registration
        except Exception as exc:  # noqa: BLE001 - the portal may not be up yet
            logger.debug("portal not ready (%s); retrying", exc)
            registration.stop()
            stop.wait(delay)
            delay = min(delay * 2, 5.0)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
