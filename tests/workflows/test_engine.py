"""The engine with a real Celery worker: success, retries, failures, fallbacks, skips."""

from __future__ import annotations

import pytest

from tests.workflows.conftest import wait_for_run
from workflows.engine import run_start
from workflows.models import RunStatus, StepStatus

pytestmark = pytest.mark.slow


def test_a_three_step_run_succeeds_and_records_every_attempt(engine_env, demo_services):
    run, created = run_start(workflow="test_demo", input={"name": "Apollo"}, triggered_by="test")
    assert created
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.context["project_id"] == "p-1"
    assert run.context["plan"] == {"phases": ["a", "b"]}
    assert run.context["agents"] == [{"agent": "planner"}]
    steps = list(run.steps.order_by("index"))
    assert [s.status for s in steps] == [StepStatus.SUCCEEDED] * 3
    attempts = [a for s in steps for a in s.attempts.all()]
    assert [(a.request_method, a.response_status) for a in attempts] == [
        ("POST", 201), ("POST", 200), ("POST", 200)
    ]
    assert attempts[1].request_url.endswith("/plans/strategic/p-1")
    assert attempts[1].request_body == {"project_id": "p-1"}
    assert attempts[0].service_name == "project_coordinator-1"
    assert run.finished_at >= run.started_at
