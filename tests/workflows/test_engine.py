"""The engine with a real Celery worker: success, retries, failures, fallbacks, skips."""

from __future__ import annotations

import pytest

from registry.breakers import breaker_for
from registry.models import HealthStatus, Service
from tests.workflows.conftest import wait_for_run
from workflows.engine import run_start
from workflows.models import RunStatus, StepStatus

# Runs on PostgreSQL + Redis and on the embedded default (SQLite); see tests/conftest.py.
pytestmark = [pytest.mark.both_dbs, pytest.mark.slow]


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


def test_a_transient_503_is_retried_with_backoff_and_then_succeeds(engine_env, demo_services):
    answers = iter([(503, {"detail": "warming up"})])
    demo_services.routes[("POST", "/projects")] = lambda body: next(answers, (201, {"id": "p-1"}))
    run, _ = run_start(workflow="test_demo", input={"name": "Apollo"}, triggered_by="test")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    step = run.steps.get(name="create_project")
    attempts = list(step.attempts.order_by("number"))
    assert [(a.number, a.response_status, a.outcome) for a in attempts] == [
        (1, 503, "retry"), (2, 201, "succeeded")
    ]
    assert "HTTP 503" in attempts[0].error
    # FAST_RETRY: initial_delay 0.2 s; the second try comes after it, and not much later.
    first, second = [r[3] for r in demo_services.hits("/projects")]
    assert 0.2 <= second - first < 3.0
    assert (attempts[1].started_at - attempts[0].finished_at).total_seconds() >= 0.19


def test_a_required_step_that_keeps_failing_fails_the_run_with_its_message(engine_env, demo_services):
    demo_services.routes[("POST", "/agents")] = lambda body: (500, {"detail": "boom"})
    run, _ = run_start(workflow="test_demo", input={"name": "Apollo"}, triggered_by="test")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.FAILED
    assert run.failed_step == "assign_agents"
    assert "HTTP 500" in run.error and "step assign_agents, after 3 attempts" in run.error
    step = run.steps.get(name="assign_agents")
    assert step.status == StepStatus.FAILED
    assert list(step.attempts.values_list("outcome", flat=True)) == ["retry", "retry", "failed"]


def test_a_missing_required_service_fails_the_run_in_the_guides_words(engine_env, stub):
    server = stub()
    server.routes[("POST", "/projects")] = lambda body: (201, {"id": "p-1"})
    server.register("PROJECT_COORDINATOR")  # no PLANNING_SYSTEM (optional), no AGENT_ORCHESTRATOR
    run, _ = run_start(workflow="test_demo", input={"name": "Apollo"}, triggered_by="test")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.FAILED
    assert run.error.startswith("Service not found: No service of type AGENT_ORCHESTRATOR found")
    assert "step assign_agents, after 1 attempt" in run.error


def test_an_optional_step_whose_service_is_missing_uses_its_fallback(engine_env, stub):
    server = stub()
    server.routes[("POST", "/projects")] = lambda body: (201, {"id": "p-1"})
    server.routes[("POST", "/agents")] = lambda body: (200, {"got_plan": body["plan"]})
    server.register("PROJECT_COORDINATOR")
    server.register("AGENT_ORCHESTRATOR")
    run, _ = run_start(workflow="test_demo", input={"name": "Apollo"}, triggered_by="test")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    plan = run.steps.get(name="plan")
    assert plan.status == StepStatus.FALLBACK
    assert "Service not found: No service of type PLANNING_SYSTEM found" in plan.error
    assert run.context["plan"] == {"phases": ["fallback"], "fallback": True}
    assert run.context["agents"] == {"got_plan": {"phases": ["fallback"], "fallback": True}}


def test_an_optional_step_whose_breaker_is_open_falls_back_without_calling_it(engine_env, demo_services):
    planning = Service.objects.get(type="PLANNING_SYSTEM")
    breaker_for(planning).force_open(reason="test: tripped", actor="test")
    run, _ = run_start(workflow="test_demo", input={"name": "Apollo"}, triggered_by="test")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    plan = run.steps.get(name="plan")
    assert plan.status == StepStatus.FALLBACK
    assert plan.error.startswith("Service unavailable: Circuit breaker open for planning_system-1")
    assert plan.attempts.count() == 1  # an open breaker is not retried
    assert demo_services.hits("/plans/strategic/p-1") == []
    assert run.context["plan"]["fallback"] is True


def test_an_optional_step_without_fallback_is_skipped_when_its_breaker_is_open(engine_env, stub):
    server = stub()
    tool = server.register("TOOL_INTEGRATION")
    breaker_for(tool).force_open(reason="test: tripped", actor="test")
    run, _ = run_start(workflow="test_skippy", input={}, triggered_by="test")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    notify = run.steps.get(name="notify")
    assert notify.status == StepStatus.SKIPPED and "Circuit breaker open" in notify.error
    assert server.requests == []


def test_an_optional_step_whose_only_instance_is_critical_falls_back(engine_env, demo_services):
    Service.objects.filter(type="PLANNING_SYSTEM").update(status=HealthStatus.CRITICAL)
    run, _ = run_start(workflow="test_demo", input={"name": "Apollo"}, triggered_by="test")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    plan = run.steps.get(name="plan")
    assert plan.status == StepStatus.FALLBACK and plan.error.startswith("No eligible service:")
    assert demo_services.hits("/plans/strategic/p-1") == []


def test_an_optional_step_without_fallback_is_skipped_and_the_run_goes_on(engine_env):
    run, _ = run_start(workflow="test_skippy", input={}, triggered_by="test")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert list(run.steps.order_by("index").values_list("status", flat=True)) == [
        StepStatus.SUCCEEDED, StepStatus.SKIPPED, StepStatus.SUCCEEDED
    ]
    assert run.context == {"first": 1, "last": 2}
