"""The demo driver: waits for the stack, starts sample runs of every workflow, prints what to click.

Run by ``make demo`` (one line of the Procfile). It talks to the portal only
through its public HTTP API (like the Web Dashboard would) and to the
simulators through their control port:

1. waits until the portal answers and the five services are registered and healthy;
2. ``project_creation`` with the chat's payload (status included: the shipped
   adapter rule fixes the chat bug), which starts ``project_planning``;
3. creates a task through the gateway and runs ``agent_task_execution`` on it;
4. makes Model Orchestration fail (error rate 100 %), runs ``agent_task_execution``
   again so it FAILS, then lets the service recover — the run waits for an operator's retry;
5. runs ``human_interaction``, which waits for an operator's answer;
6. prints the admin URL, the login and what to click, then idles until stopped
   (honcho stops every process when one exits).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from simulators.process import ControlClient
from simulators.services import ALL_SERVICES

logger = logging.getLogger("demo")
TYPES = [cls.service_type for cls in ALL_SERVICES]


class DemoError(RuntimeError):
    pass


class Portal:
    def __init__(self, url: str, api_key: str):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {api_key}"

    def call(self, method: str, path: str, **kw: Any) -> Any:
        response = self.session.request(method, self.url + path, timeout=15, **kw)
        if response.status_code >= 400:
            raise DemoError(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    def services(self) -> list[dict[str, Any]]:
        body = self.call("GET", "/registry/services", params={"page_size": 500})
        return body["results"] if isinstance(body, dict) and "results" in body else body

    def start(self, workflow: str, **input: Any) -> dict[str, Any]:
        run = self.call("POST", "/workflows/runs", json={"workflow": workflow, "input": input})
        logger.info("started %s run %s", workflow, run["id"])
        return run

    def wait(self, run_id: str, statuses: tuple[str, ...], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.call("GET", f"/workflows/runs/{run_id}")
            if run["status"] in statuses:
                logger.info("run %s (%s) is %s%s", run_id, run["workflow"], run["status"],
                            f": {run['error']}" if run.get("error") else "")
                return run
            if time.monotonic() > deadline:
                raise DemoError(f"run {run_id} ({run['workflow']}) still {run['status']} after {timeout:.0f} s")
            time.sleep(0.3)


def wait_for_stack(portal: Portal, *, timeout: float, healthy_grace: float) -> None:
    """The portal answers, every type is registered; healthy, or at least registered after a grace."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last = ""
    while True:
        try:
            services = portal.services()
        except (requests.RequestException, DemoError) as exc:
            services, note = [], f"portal not ready ({exc.__class__.__name__})"
        else:
            note = ""
        status = {svc["type"]: svc["status"] for svc in services if svc["type"] in TYPES}
        missing = [t for t in TYPES if t not in status]
        unhealthy = [t for t, s in status.items() if s != "passing"]
        summary = note or f"registered {len(status)}/5, passing {5 - len(missing) - len(unhealthy)}/5"
        if summary != last:
            logger.info("waiting for the stack: %s", summary)
            last = summary
        if not note and not missing:
            if not unhealthy:
                return
            # Never-checked services are eligible too; don't stall the demo on a slow first sweep.
            if time.monotonic() - started > healthy_grace and all(status[t] == "unknown" for t in unhealthy):
                logger.warning("health checks have not run yet for %s; going on", ", ".join(unhealthy))
                return
        if time.monotonic() > deadline:
            raise DemoError(f"the stack was not ready after {timeout:.0f} s: {summary}; missing {missing}")
        time.sleep(0.5)


def run_scenario(portal: Portal, control: ControlClient, *, timeout: float) -> dict[str, Any]:
    finished = ("succeeded", "failed", "cancelled")

    creation = portal.start("project_creation", name="Berrys website",
                            description="Created from the chat", status="PLANNING")
    creation = portal.wait(creation["id"], finished, timeout)
    if creation["status"] != "succeeded":
        raise DemoError(f"project_creation {creation['status']}: {creation['error']}")
    project_id = creation["context"]["project_id"]
    planning = creation["context"].get("planning") or {}
    agents: list[dict[str, Any]] = []
    if planning.get("started"):
        planned = portal.wait(planning["run_id"], finished, timeout)
        agents = planned["context"].get("agents", []) if planned["status"] == "succeeded" else []

    task = portal.call("POST", "/gateway/AGENT_ORCHESTRATOR/tasks", json={
        "name": "Write the landing page copy", "role": "writer", "capability": "text_generation",
        "project_id": project_id,
    })
    execution = portal.wait(portal.start("agent_task_execution", task_id=task["id"])["id"], finished, timeout)

    # The injected fault: Model Orchestration answers 500 to everything but /health.
    control.faults("MODEL_ORCHESTRATION", error_rate=1.0)
    try:
        failing_task = portal.call("POST", "/gateway/AGENT_ORCHESTRATOR/tasks", json={
            "name": "Summarise competitor sites", "role": "researcher", "capability": "web_search",
            "project_id": project_id,
        })
        failed = portal.wait(portal.start("agent_task_execution", task_id=failing_task["id"])["id"],
                             finished, timeout)
    finally:
        control.reset("MODEL_ORCHESTRATION")  # recovered: the operator's retry can now succeed

    agent_id = agents[0]["id"] if agents else "agent-demo"
    human = portal.start("human_interaction", agent_id=agent_id, project_id=project_id,
                         question="Should the Berrys website use a light or a dark theme?")
    human = portal.wait(human["id"], ("waiting", *finished), timeout)
    return {"creation": creation, "planning": planning, "execution": execution, "failed": failed,
            "human": human}


def instructions(portal_url: str, results: dict[str, Any], username: str, password: str) -> str:
    admin = portal_url.rstrip("/") + "/admin/"
    failed, human = results["failed"], results["human"]
    lines = [
        "",
        "=" * 72,
        "DEMO READY — the Berrys Portal is running with the five simulated services.",
        f"  Admin:  {admin}",
        f"  Login:  {username} / {password}",
        "",
        "Sample runs (Admin → Workflows → Workflow runs):",
        f"  project_creation      {results['creation']['status']:<10} {results['creation']['id']}",
    ]
    if results["planning"].get("started"):
        lines.append(f"  project_planning      {'started':<10} {results['planning']['run_id']}")
    lines += [
        f"  agent_task_execution  {results['execution']['status']:<10} {results['execution']['id']}",
        f"  agent_task_execution  {failed['status']:<10} {failed['id']}   <- the injected fault",
        f"  human_interaction     {human['status']:<10} {human['id']}   <- waits for you",
        "",
        "What to click:",
        f"  1. Open the FAILED run {failed['id'][:8]}…: its error names the step (execution_plan)",
        "     and each attempt shows Model Orchestration's HTTP 500. Those failures opened its",
        "     circuit breaker (Admin → Service registry → Services → model-orchestration: open).",
        "     The service has recovered; the breaker closes on the first health probe after its",
        "     reset timeout (60 s), or at once: tick model-orchestration in the Services list,",
        "     action 'Reset circuit breaker (close it)'.",
        "     Then click 'Retry from failed step': the run continues from there and succeeds.",
        f"  2. Open the WAITING run {human['id'][:8]}…: the agent's question is in its context.",
        "     Click 'Answer waiting step…' and send {\"answer\": \"Dark\"}: the answer goes to",
        "     the agent (Agent Orchestrator) and the project (Project Coordinator).",
        "  3. Admin → Service registry → Request adapter rules: the shipped rule that drops",
        "     'status' from POST /projects (the chat bug). Disable it and start project_creation",
        "     again to see the Project Coordinator's 500.",
        f"  API docs: {portal_url.rstrip('/')}/api/docs   Ctrl-C stops everything.",
        "=" * 72,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.demo_driver", description=__doc__.split("\n")[0])
    parser.add_argument("--portal", default=os.environ.get("PORTAL_URL", "http://127.0.0.1:8090"))
    parser.add_argument("--api-key-file", type=Path, required=True,
                        help="Key with scopes registry:read, workflows, gateway (written by `make demo`).")
    parser.add_argument("--control", required=True, help="The simulators' control URL (base port + 5).")
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("DEMO_TIMEOUT", 180)))
    parser.add_argument("--username", default=os.environ.get("DEMO_USERNAME", "operator"))
    parser.add_argument("--password", default=os.environ.get("DEMO_PASSWORD", "berrys-demo"))
    parser.add_argument("--exit", action="store_true", help="Exit when done instead of idling.")
    parser.add_argument("--banner-file", type=Path, default=None,
                        help="Also write the banner here (make demo-status prints it again).")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    portal = Portal(args.portal, args.api_key_file.read_text().strip())
    control = ControlClient(args.control)
    try:
        wait_for_stack(portal, timeout=args.timeout, healthy_grace=20.0)
        results = run_scenario(portal, control, timeout=args.timeout)
    except DemoError as exc:
        logger.error("DEMO FAILED: %s", exc)
        print(f"DEMO FAILED: {exc}", flush=True)
        if not args.exit:
            stop.wait()  # keep the stack up so the operator can look at what went wrong
        return 1
    banner = instructions(args.portal, results, args.username, args.password)
    if args.banner_file is not None:
        args.banner_file.parent.mkdir(parents=True, exist_ok=True)
        args.banner_file.write_text(banner + "\n")
    print(banner, flush=True)
    if not args.exit:
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
