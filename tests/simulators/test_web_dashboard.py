"""The Web Dashboard simulator: registers through the client package, starts workflows, relays answers."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from django.utils import timezone

from registry.auth import api_key_create
from registry.models import Service
from simulators.web_dashboard import WebDashboard, register_until_up
from workflows.engine import run_start
from workflows.models import RunStatus, StepStatus, WorkflowRun

pytestmark = [pytest.mark.slow]


@pytest.fixture
def dashboard(live_server, transactional_db):
    key_row, key = api_key_create(name="web-dashboard", scopes=["registry:write", "workflows"])
    sim = WebDashboard(portal_url=live_server.url, api_key=key)
    sim.start()
    stop = threading.Event()
    registration = register_until_up(sim, portal_url=live_server.url, api_key=key, stop=stop)
    yield sim, registration, key_row
    registration.stop()
    sim.stop()


def test_it_registers_as_the_web_dashboard_and_deregisters(dashboard):
    sim, registration, _ = dashboard
    row = Service.objects.get(pk=registration.service_id)
    assert (row.type, row.url, row.health_url) == ("WEB_DASHBOARD", sim.url, sim.url + "/health")
    registration.stop()
    assert not Service.objects.filter(type="WEB_DASHBOARD").exists()


def test_the_chat_starts_project_creation_through_the_portal(dashboard):
    sim, _, _ = dashboard
    response = requests.post(sim.url + "/chat/projects", json={"name": "Apollo"}, timeout=10)
    assert response.status_code == 201, response.text
    run = WorkflowRun.objects.get(pk=response.json()["run_id"])
    assert run.workflow == "project_creation"
    assert run.input == {"name": "Apollo", "description": "", "status": "PLANNING"}  # the chat's payload


def test_it_lists_waiting_questions_and_relays_the_answer(dashboard):
    sim, _, key = dashboard
    # Started with the dashboard's key (as the demo's runs are): a workflows key reads its own runs.
    run, _ = run_start(workflow="human_interaction", triggered_by="test", owner_key=key,
                       input={"agent_id": "a-1", "question": "Which database?", "project_id": "p-1"})
    run.steps.filter(index=0).update(status=StepStatus.SUCCEEDED, output={"question_id": "q-1"})
    run.steps.filter(index=1).update(status=StepStatus.WAITING, wait_until=timezone.now() + timedelta(hours=1))
    WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.WAITING)

    questions = requests.get(sim.url + "/questions", timeout=10).json()["questions"]
    assert questions == [{"run_id": str(run.pk), "agent_id": "a-1", "question": "Which database?"}]
    answered = requests.post(sim.url + f"/questions/{run.pk}/answer", json={"answer": "PostgreSQL"}, timeout=10)
    assert answered.status_code == 200, answered.text
    step = run.steps.get(index=1)
    assert step.status != StepStatus.WAITING
    assert requests.get(sim.url + "/questions", timeout=10).json()["questions"] == []


class FlakyPortal:
    """Answers the first POST /workflows/runs with 503, the next ones with the run."""

    def __init__(self):
        self.keys: list[str | None] = []
        portal = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                portal.keys.append(self.headers.get("Idempotency-Key"))
                status, body = (503, {"detail": "busy"}) if len(portal.keys) == 1 else \
                    (201, {"id": "run-1", "status": "queued"})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_start_the_portal_answers_503_is_retried_with_the_same_idempotency_key():
    portal = FlakyPortal()
    sim = WebDashboard(portal_url=portal.url, api_key="bp_test")
    sim.start()
    try:
        response = requests.post(sim.url + "/chat/projects", json={"name": "Apollo", "request_id": "chat-7"},
                                 timeout=10)
        assert response.status_code == 201, response.text
        assert response.json() == {"run_id": "run-1", "status": "queued"}
        assert portal.keys == ["chat-7", "chat-7"]  # the client package's retry, deduped by the portal
    finally:
        sim.stop()
        portal.server.shutdown()
        portal.server.server_close()
