"""The simulated Berrys services: endpoints, /health, fault knobs, and the registration protocol.

The simulators run as a real child process (``python -m simulators``). The
registration tests point them at a recording portal stand-in: a real loopback
HTTP server that answers like the registry API and remembers every call.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from berrys_client import USER_AGENT

from simulators.core import send_json
from simulators.process import SimulatorProcess


@pytest.fixture
def clean(sims):
    yield sims
    for svc in sims.ready["services"]:
        sims.reset(svc["slug"])


class RecordingPortal:
    """Answers POST /registry/services, PUT …/heartbeat and DELETE like the registry API."""

    def __init__(self, port: int = 0):
        self.calls: list[tuple[str, str, dict | None, str]] = []
        self.agents: set[str | None] = set()  # the User-Agents that called
        self.forget = False
        portal = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                portal.calls.append((self.command, self.path, body, self.headers.get("Authorization")))
                portal.agents.add(self.headers.get("User-Agent"))
                status, payload = 404, {"detail": "not found"}
                if self.command == "POST" and self.path == "/registry/services":
                    status, payload = 201, {"id": len(portal.calls), **body}
                elif self.command == "PUT" and self.path.endswith("/heartbeat"):
                    status, payload = (404, {"detail": "gone"}) if portal.forget else (200, {})
                elif self.command == "DELETE":
                    status, payload = 204, None
                send_json(self, status, payload)

            do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, method: str, suffix: str = "") -> list:
        return [c for c in self.calls if c[0] == method and c[1].endswith(suffix)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_each_service_serves_health_in_the_guides_format(sims):
    assert len(sims.urls) == 5
    for url in sims.urls.values():
        response = requests.get(f"{url}/health", timeout=5)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "healthy"
        assert body["database"] is True and body["cache"] is True and body["dependencies"] is True
        assert "T" in body["timestamp"]


def test_the_project_coordinator_answers_500_to_a_status_field_like_the_chat_bug(sims):
    pc = sims.urls["PROJECT_COORDINATOR"]
    bad = requests.post(f"{pc}/projects", json={"name": "New Project", "status": "PLANNING"}, timeout=5)
    assert bad.status_code == 500
    assert "status" in bad.json()["error"]
    good = requests.post(f"{pc}/projects", json={"name": "New Project"}, timeout=5)
    assert good.status_code == 201
    project = requests.get(f"{pc}/projects/{good.json()['id']}", timeout=5).json()
    assert project["name"] == "New Project" and project["status"] == "DRAFT"
    patched = requests.patch(f"{pc}/projects/{project['id']}", json={"status": "PLANNED"}, timeout=5)
    assert patched.json()["status"] == "PLANNED"


def test_ids_carry_from_planning_to_agents_to_tasks_to_execution(sims):
    u = sims.urls
    strategic = requests.post(f"{u['PLANNING_SYSTEM']}/plans/strategic",
                              json={"project_id": "proj-x", "name": "X"}, timeout=5).json()
    tactical = requests.post(f"{u['PLANNING_SYSTEM']}/plans/tactical",
                             json={"project_id": "proj-x", "strategic_plan_id": strategic["id"]},
                             timeout=5).json()
    agents = requests.post(f"{u['AGENT_ORCHESTRATOR']}/agents",
                           json={"project_id": "proj-x", "agents": tactical["required_agents"]},
                           timeout=5).json()["agents"]
    assigned = requests.post(f"{u['AGENT_ORCHESTRATOR']}/tasks/assign", timeout=5, json={
        "project_id": "proj-x", "tasks": tactical["tasks"], "agent_ids": [a["id"] for a in agents],
    }).json()["assignments"]
    assert len(assigned) == len(tactical["tasks"]) == 3
    task = requests.get(f"{u['AGENT_ORCHESTRATOR']}/tasks/{assigned[0]['task_id']}", timeout=5).json()
    researcher = next(a for a in agents if a["role"] == "researcher")
    assert task["status"] == "ASSIGNED" and task["agent_id"] == researcher["id"]
    plan = requests.post(f"{u['MODEL_ORCHESTRATION']}/plans/execution",
                         json={"task_id": task["id"], "task": task}, timeout=5).json()
    tools = requests.get(f"{u['TOOL_INTEGRATION']}/tools",
                         params={"capability": plan["required_capabilities"]}, timeout=5).json()["tools"]
    assert {t["name"] for t in tools} == {"web-search", "news-search"}
    execution = requests.post(f"{u['MODEL_ORCHESTRATION']}/executions", timeout=5,
                              json={"task_id": task["id"], "plan_id": plan["id"], "tools": tools}).json()
    assert execution["tools_used"] == ["web-search", "news-search"]


def test_questions_are_answered_through_the_agent_orchestrator(sims):
    ao = sims.urls["AGENT_ORCHESTRATOR"]
    question = requests.post(f"{ao}/questions", json={"agent_id": "agent-1", "question": "Which?"},
                             timeout=5).json()
    assert question["status"] == "OPEN"
    answered = requests.post(f"{ao}/answers", json={"question_id": question["id"], "answer": "That one"},
                             timeout=5).json()
    assert answered["status"] == "ANSWERED" and answered["answer"] == "That one"
    assert sims.state("AGENT_ORCHESTRATOR")["questions"][question["id"]]["answer"] == "That one"


def test_unknown_routes_and_bad_bodies_get_clear_errors(sims):
    ao = sims.urls["AGENT_ORCHESTRATOR"]
    assert requests.get(f"{ao}/nothing", timeout=5).status_code == 404
    assert requests.delete(f"{ao}/tasks/task-1", timeout=5).status_code == 405
    missing = requests.post(f"{ao}/questions", json={"question": "?"}, timeout=5)
    assert missing.status_code == 422 and "agent_id" in missing.json()["detail"]


def test_latency_and_error_rate_knobs_apply_at_run_time(clean):
    ti = clean.urls["TOOL_INTEGRATION"]
    clean.faults("TOOL_INTEGRATION", latency_ms=300)
    started = time.perf_counter()
    assert requests.get(f"{ti}/tools", timeout=5).status_code == 200
    assert time.perf_counter() - started >= 0.3
    clean.faults("TOOL_INTEGRATION", latency_ms=0, error_rate=1.0)
    assert requests.get(f"{ti}/tools", timeout=5).status_code == 500
    # The error rate spares /health: a flaky service still looks alive to the sweep.
    assert requests.get(f"{ti}/health", timeout=5).status_code == 200


def test_down_answers_503_and_refuse_closes_the_port_until_cleared(clean):
    ps = clean.urls["PLANNING_SYSTEM"]
    kept_alive = requests.Session()
    assert kept_alive.get(f"{ps}/health", timeout=5).status_code == 200
    clean.faults("planning-system", down=True)
    health = requests.get(f"{ps}/health", timeout=5)
    assert health.status_code == 503 and health.json()["status"] == "unhealthy"
    clean.faults("planning-system", down="refuse")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{ps}/health", timeout=5)
    # A pooled keep-alive connection is dropped too, as when a real service dies.
    with pytest.raises(requests.ConnectionError):
        kept_alive.get(f"{ps}/health", timeout=5)
    clean.faults("planning-system", down=False)
    assert requests.get(f"{ps}/health", timeout=5).status_code == 200


def test_hang_holds_requests_until_the_knob_is_cleared(clean):
    mo = clean.urls["MODEL_ORCHESTRATION"]
    clean.faults("MODEL_ORCHESTRATION", hang=True)
    with pytest.raises(requests.Timeout):
        requests.get(f"{mo}/health", timeout=0.5)
    result = {}
    waiter = threading.Thread(
        target=lambda: result.update(status=requests.get(f"{mo}/health", timeout=10).status_code)
    )
    waiter.start()
    time.sleep(0.3)
    clean.faults("MODEL_ORCHESTRATION", hang=False)
    waiter.join(timeout=10)
    assert result == {"status": 200}


def test_the_control_api_rejects_unknown_knobs_and_bad_values(sims):
    bad = requests.post(f"{sims.control_url}/services/PLANNING_SYSTEM/faults", json={"slow": 1}, timeout=5)
    assert bad.status_code == 400 and "slow" in bad.json()["detail"]
    bad = requests.post(f"{sims.control_url}/services/PLANNING_SYSTEM/faults",
                        json={"error_rate": 2}, timeout=5)
    assert bad.status_code == 400 and "error_rate" in bad.json()["detail"]
    assert requests.get(f"{sims.control_url}/services/NOPE/state", timeout=5).status_code == 404


def test_it_registers_with_the_guides_payload_heartbeats_and_deregisters_on_sigterm():
    portal = RecordingPortal()
    stack = SimulatorProcess.start(portal_url=portal.url, api_key="bp_test", heartbeat=0.2,
                                   only=["PROJECT_COORDINATOR", "PLANNING_SYSTEM"])
    try:
        assert _wait_until(lambda: len(portal.of("POST")) >= 2)
        assert _wait_until(lambda: len(portal.of("PUT", "/heartbeat")) >= 2)
    finally:
        assert stack.stop() == 0
        portal.close()
    posts = {c[2]["type"]: c for c in portal.of("POST")}
    pc = posts["PROJECT_COORDINATOR"]
    assert pc[3] == "Token bp_test"
    assert pc[2]["url"] == stack.urls["PROJECT_COORDINATOR"]
    assert pc[2]["health_url"] == stack.urls["PROJECT_COORDINATOR"] + "/health"
    assert pc[2]["metadata"] == {"version": "1.0.0"}
    assert {"method": "POST", "path": "/projects"} in pc[2]["endpoints"]
    assert len(portal.of("DELETE")) == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_registration_waits_for_a_portal_that_starts_later_and_repeats_when_forgotten():
    port = _free_port()
    stack = SimulatorProcess.start(portal_url=f"http://127.0.0.1:{port}", api_key="bp_test",
                                   heartbeat=0.2, only=["TOOL_INTEGRATION"])
    portal = None
    try:
        time.sleep(1.0)  # the portal is not up yet: connection refused, retried with backoff
        portal = RecordingPortal(port=port)
        assert _wait_until(lambda: len(portal.of("POST")) == 1, timeout=15)
        portal.forget = True  # heartbeats now answer 404: the simulator registers again
        assert _wait_until(lambda: len(portal.of("POST")) >= 2, timeout=10)
    finally:
        stack.stop()
        if portal:
            portal.close()


def test_they_register_heartbeat_and_deregister_through_the_client_package():
    portal = RecordingPortal()
    stack = SimulatorProcess.start(portal_url=portal.url, api_key="bp_test", heartbeat=0.2,
                                   only=["TOOL_INTEGRATION"])
    try:
        assert _wait_until(lambda: len(portal.of("PUT", "/heartbeat")) >= 1)
    finally:
        assert stack.stop() == 0
        portal.close()
    assert len(portal.of("DELETE")) == 1
    assert portal.agents == {USER_AGENT}  # berrys_client's requests, not hand-written ones
