"""The integration guide's four workflows, end to end: simulators as a real process, a real worker.

The simulated services are registered as ``Service`` rows pointing at the
simulator process (registration itself is covered in tests/simulators); the
Celery worker from tests/workflows/conftest.py runs every step through the
ServiceClient (discovery, adapters, breakers shared through Redis).
"""

from __future__ import annotations

import pytest
import requests
from django.conf import settings

from registry.adapters import adapter_cache_clear
from registry.breakers import breaker_for, breaker_forget
from registry.models import HealthStatus, RequestAdapterRule, Service
from simulators.process import SimulatorProcess
from tests.workflows.conftest import wait_for_run, wait_until
from workflows.engine import run_start
from workflows.models import RunStatus, StepStatus, WorkflowRun

pytestmark = pytest.mark.slow

PC, PS, AO, MO, TI = (
    "PROJECT_COORDINATOR", "PLANNING_SYSTEM", "AGENT_ORCHESTRATOR", "MODEL_ORCHESTRATION",
    "TOOL_INTEGRATION",
)
RUN_TIMEOUT = 60.0


@pytest.fixture
def berrys(engine_env, sims):
    """Registers the simulators (all but those a test leaves out) and cleans up after the test."""
    created: list[Service] = []
    # A transactional test's flush deletes migration-shipped rows: put the chat-bug rule back.
    RequestAdapterRule.objects.get_or_create(
        service_type=PC, method="POST", endpoint_pattern="/projects", action="drop", field="status",
        defaults={"order": 10, "description": "Chat bug (shipped by registry migration 0005)."},
    )
    adapter_cache_clear()

    def register(*, without: tuple[str, ...] = (), **overrides) -> dict[str, Service]:
        for service_type, url in sims.urls.items():
            if service_type in without:
                continue
            created.append(Service.objects.create(
                name=service_type.lower().replace("_", "-"), type=service_type, url=url,
                health_url=f"{url}/health", status=HealthStatus.PASSING,
                **overrides.get(service_type, {}),
            ))
        return {svc.type: svc for svc in created}

    yield register
    for svc in sims.ready["services"]:
        sims.reset(svc["slug"])
    for svc in created:
        breaker_forget(service_id=svc.pk)


def start(workflow: str, **input) -> WorkflowRun:
    run, created = run_start(workflow=workflow, input=input, triggered_by="test")
    assert created
    return run


def steps(run: WorkflowRun) -> dict[str, str]:
    return dict(run.steps.order_by("index").values_list("name", "status"))


def new_task(sims: SimulatorProcess, **fields) -> dict:
    body = {"name": "Research the domain", "role": "researcher", "capability": "web_search", **fields}
    response = requests.post(f"{sims.urls[AO]}/tasks", json=body, timeout=5)
    response.raise_for_status()
    return response.json()


def test_chat_project_creation_creates_the_project_and_plans_it(berrys, sims):
    berrys()
    run = wait_for_run(start("project_creation", name="New Project").pk, timeout=RUN_TIMEOUT)
    assert run.status == RunStatus.SUCCEEDED, run.error
    create = run.steps.get(name="create_project").attempts.get()
    assert create.request_body["status"] == "PLANNING"  # the dashboard's payload, as the guide sends it
    assert create.response_status == 201
    assert run.context["planning"]["started"] is True

    planning = wait_for_run(run.context["planning"]["run_id"], timeout=RUN_TIMEOUT)
    assert planning.status == RunStatus.SUCCEEDED, planning.error
    assert set(steps(planning).values()) == {StepStatus.SUCCEEDED}
    project = sims.state(PC)["projects"][run.context["project_id"]]
    assert project["status"] == "PLANNED"
    assert project["planning"]["source"] == "planning_system"
    assert len(project["planning"]["assignments"]) == 3
    tasks = sims.state(AO)["tasks"]
    assert {tasks[a["task_id"]]["status"] for a in project["planning"]["assignments"]} == {"ASSIGNED"}


def test_chat_project_creation_hits_the_500_when_the_adapter_rule_is_off(berrys, sims):
    berrys()
    rule = RequestAdapterRule.objects.get(service_type=PC, endpoint_pattern="/projects")
    rule.enabled = False
    rule.save()  # bumps the shared rules version: the worker reloads its rules within
    # ADAPTER_VERSION_CHECK_SECONDS. Polled (a run started before the reload still succeeds),
    # with a generous limit rather than a sleep just over that delay.
    runs: list[WorkflowRun] = []

    def a_run_fails() -> bool:
        runs.append(wait_for_run(start("project_creation", name="New Project").pk, timeout=RUN_TIMEOUT))
        return runs[-1].status == RunStatus.FAILED

    wait_until(a_run_fails, timeout=settings.ADAPTER_VERSION_CHECK_SECONDS + 30, what="the rule change to reach the worker")
    run = runs[-1]
    assert run.status == RunStatus.FAILED
    assert run.failed_step == "create_project"
    assert "HTTP 500" in run.error
    attempt = run.steps.get(name="create_project").attempts.last()
    assert attempt.response_status == 500 and "status" in attempt.response_body
    assert "project_id" not in run.context


def test_planning_system_missing_gives_a_fallback_plan_recorded_as_fallback(berrys, sims):
    berrys(without=(PS,))
    project = requests.post(f"{sims.urls[PC]}/projects", json={"name": "Offline plan"}, timeout=5).json()
    run = wait_for_run(start("project_planning", project_id=project["id"]).pk, timeout=RUN_TIMEOUT)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert steps(run)["strategic_plan"] == StepStatus.FALLBACK
    assert steps(run)["tactical_plan"] == StepStatus.FALLBACK
    strategic = run.steps.get(name="strategic_plan")
    assert strategic.error == "Service not found: No service of type PLANNING_SYSTEM found"
    assert strategic.output["strategic_plan"]["source"] == "fallback"
    updated = sims.state(PC)["projects"][project["id"]]
    assert updated["status"] == "PLANNED" and updated["planning"]["source"] == "fallback"


def test_project_creation_does_not_start_planning_without_the_planning_system(berrys, sims):
    berrys(without=(PS,))
    run = wait_for_run(start("project_creation", name="Lonely").pk, timeout=RUN_TIMEOUT)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.context["planning"] == {
        "started": False, "reason": "No service of type PLANNING_SYSTEM found",
    }


def test_agent_task_execution_uses_the_discovered_tools(berrys, sims):
    berrys()
    task = new_task(sims)
    run = wait_for_run(start("agent_task_execution", task_id=task["id"]).pk, timeout=RUN_TIMEOUT)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert set(steps(run).values()) == {StepStatus.SUCCEEDED}
    assert run.context["execution"]["tools_used"] == ["web-search", "news-search"]
    done = sims.state(AO)["tasks"][task["id"]]
    assert done["status"] == "COMPLETED" and "web-search" in done["result"]


def test_tool_integration_down_means_the_task_runs_without_tools(berrys, sims):
    berrys()
    sims.faults(TI, down="refuse")
    task = new_task(sims)
    run = wait_for_run(start("agent_task_execution", task_id=task["id"]).pk, timeout=RUN_TIMEOUT)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert steps(run)["discover_tools"] == StepStatus.SKIPPED
    assert "Connection error" in run.steps.get(name="discover_tools").error
    assert run.context["execution"]["tools_used"] == []
    assert sims.state(AO)["tasks"][task["id"]]["result"].endswith("without tools")


def test_a_failing_agent_orchestrator_trips_its_breaker_and_an_operator_retry_recovers(
    berrys, sims, operate_client
):
    services = berrys(**{AO: {"breaker_fail_max": 3, "breaker_reset_timeout_seconds": 2.0}})
    task = new_task(sims)
    sims.faults(AO, error_rate=1.0)

    first = wait_for_run(start("agent_task_execution", task_id=task["id"]).pk, timeout=RUN_TIMEOUT)
    assert first.status == RunStatus.FAILED
    assert first.error.startswith("Service error:") and "HTTP 500" in first.error
    assert first.steps.get(name="get_task").attempts.count() == 3

    # Three failures opened the breaker: the next run fails fast, without calling the service.
    second = wait_for_run(start("agent_task_execution", task_id=task["id"]).pk, timeout=RUN_TIMEOUT)
    assert second.status == RunStatus.FAILED
    assert second.error.startswith("Service unavailable: Circuit breaker open"), second.error
    assert "step get_task, after 1 attempt" in second.error

    sims.reset(AO)
    # Past the breaker's reset timeout (as the shared store sees it, not a sleep just over it),
    # the retry's first call is the half-open trial.
    ao = Service.objects.get(pk=services[AO].pk)
    wait_until(lambda: breaker_for(ao).snapshot().reset_due(ao.breaker_reset_timeout_seconds),
               timeout=30, what="the breaker's reset timeout")
    response = operate_client.post(f"/workflows/runs/{second.pk}/retry", {}, format="json")
    assert response.status_code == 200, response.content
    retried = wait_for_run(second.pk, timeout=RUN_TIMEOUT)
    assert retried.status == RunStatus.SUCCEEDED, retried.error
    assert sims.state(AO)["tasks"][task["id"]]["status"] == "COMPLETED"
    assert services[AO].breaker_reset_timeout_seconds == 2.0


def test_human_interaction_waits_for_an_answer_given_through_the_api(berrys, sims, operate_client):
    berrys()
    project = requests.post(f"{sims.urls[PC]}/projects", json={"name": "Ask me"}, timeout=5).json()
    run = start("human_interaction", agent_id="agent-7", project_id=project["id"],
                question="Which database should we use?")
    wait_until(lambda: WorkflowRun.objects.get(pk=run.pk).status == RunStatus.WAITING,
               timeout=RUN_TIMEOUT, what="the run to wait for an answer")
    question_id = WorkflowRun.objects.get(pk=run.pk).context["question_id"]
    assert sims.state(AO)["questions"][question_id]["status"] == "OPEN"

    response = operate_client.post(f"/workflows/runs/{run.pk}/signal",
                                     {"data": {"answer": "PostgreSQL"}}, format="json")
    assert response.status_code == 200, response.content
    done = wait_for_run(run.pk, timeout=RUN_TIMEOUT)
    assert done.status == RunStatus.SUCCEEDED, done.error
    assert sims.state(AO)["questions"][question_id]["answer"] == "PostgreSQL"
    notes = sims.state(PC)["projects"][project["id"]]["notifications"]
    assert notes[-1]["answer"] == "PostgreSQL" and notes[-1]["agent_id"] == "agent-7"
