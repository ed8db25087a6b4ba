"""Workflow readiness: the guide's dependency table, checked against the steps, and the live verdicts."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from registry import alerts, health
from registry.auth import api_key_create
from registry.breakers import breaker_for
from registry.models import HealthStatus, Service
from registry.types import ServiceType as T
from tests.registry.health_fixtures import clean_state, loopback  # noqa: F401 - fixtures used by name
from tests.registry.loopback import Reply
from workflows import definitions
from workflows.definitions import DefinitionError, Step, Workflow, register, unregister

# The integration guide's table (ARCHITECTURE.md, "Workflows").
GUIDE_TABLE = {
    "project_creation": ({T.WEB_DASHBOARD, T.PROJECT_COORDINATOR}, {T.PLANNING_SYSTEM, T.AGENT_ORCHESTRATOR}),
    "project_planning": ({T.PROJECT_COORDINATOR, T.PLANNING_SYSTEM, T.AGENT_ORCHESTRATOR},
                         {T.MODEL_ORCHESTRATION}),
    "agent_task_execution": ({T.AGENT_ORCHESTRATOR, T.MODEL_ORCHESTRATION}, {T.TOOL_INTEGRATION}),
    "human_interaction": ({T.AGENT_ORCHESTRATOR, T.WEB_DASHBOARD}, {T.PROJECT_COORDINATOR}),
}
HEALTHY = Reply(200, {"status": "healthy"})


def test_the_guide_workflows_declare_the_guides_table():
    for name, (required, optional) in GUIDE_TABLE.items():
        declared = definitions.get(name).dependencies()
        assert (set(declared[0]), set(declared[1])) == (required, optional), name


def _step(name: str, service_type: str, **kw) -> Step:
    return Step(name=name, service_type=service_type, path="/x", **kw)


@pytest.mark.parametrize(
    ("steps", "requires", "optional", "callers", "complaint"),
    [
        ([_step("a", "PLANNING_SYSTEM")], (), ("PLANNING_SYSTEM",), (), "not in requires"),
        ([_step("a", "PLANNING_SYSTEM"), _step("b", "TOOL_INTEGRATION", required=False)],
         ("PLANNING_SYSTEM",), (), (), "not declared"),
        ([_step("a", "PLANNING_SYSTEM")], ("PLANNING_SYSTEM", "WEB_DASHBOARD"), (), (), "no step uses"),
        ([_step("a", "PLANNING_SYSTEM")], ("PLANNING_SYSTEM",), (), ("WEB_DASHBOARD",), "callers"),
    ],
)
def test_a_table_that_disagrees_with_the_steps_is_refused(steps, requires, optional, callers, complaint):
    with pytest.raises(DefinitionError, match=complaint):
        Workflow(name="drift", version=1, steps=steps, requires=requires, optional=optional, callers=callers)


def test_an_optional_step_or_one_with_a_fallback_may_use_an_optional_service():
    Workflow(name="ok", version=1, requires=("PLANNING_SYSTEM",), optional=("TOOL_INTEGRATION",), steps=[
        _step("a", "PLANNING_SYSTEM"),
        _step("b", "TOOL_INTEGRATION", required=False),
        _step("c", "TOOL_INTEGRATION", fallback=lambda ctx: {}),
    ])


@pytest.fixture
def reader(db) -> APIClient:
    _, key = api_key_create(name="reader", scopes=["registry:read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def _up(service_type: str, name: str | None = None, **fields) -> Service:
    return Service.objects.create(name=name or service_type.lower(), type=service_type,
                                  url=f"http://127.0.0.1:{9000 + len(name or service_type)}",
                                  status=HealthStatus.PASSING, **fields)


def _report(client, name: str) -> dict:
    response = client.get("/workflows/readiness")
    assert response.status_code == 200, response.content
    return {r["workflow"]: r for r in response.json()}[name]


def test_ready_degraded_blocked_in_the_api(reader, clean_state):  # noqa: F811
    for service_type in (T.PROJECT_COORDINATOR, T.PLANNING_SYSTEM, T.AGENT_ORCHESTRATOR, T.MODEL_ORCHESTRATION):
        _up(service_type)
    assert _report(reader, "project_planning")["status"] == "ready"

    Service.objects.filter(type=T.MODEL_ORCHESTRATION).update(status=HealthStatus.CRITICAL)
    report = _report(reader, "project_planning")
    assert report["status"] == "degraded" and report["degraded_by"] == [T.MODEL_ORCHESTRATION]
    [mo] = report["optional"]
    assert mo["available"] is False and mo["fallbacks"] == ["execution_preview: skipped"]
    assert "model_orchestration: critical" in mo["reason"]

    ao = Service.objects.get(type=T.AGENT_ORCHESTRATOR)
    breaker_for(ao).force_open(reason="test")
    report = _report(reader, "project_planning")
    assert report["status"] == "blocked" and report["blocked_by"] == [T.AGENT_ORCHESTRATOR]
    [down] = [r for r in report["required"] if not r["available"]]
    assert down["breakers"] == {"agent_orchestrator": "open"}
    assert down["since"] and "breaker open" in down["reason"]

    alerts.alerts_flush()  # the alert rows, derived from the transitions, before the delete
    ao.delete()
    down = [r for r in _report(reader, "project_planning")["required"] if not r["available"]][0]
    assert (down["reason"], down["instances"]) == ("no instance registered", 0)


def test_readiness_follows_the_health_checks_and_the_metric(reader, loopback, clean_state):  # noqa: F811
    """ready -> degraded -> blocked -> ready as services stop and start answering their probes."""
    servers = {}
    for service_type in (T.AGENT_ORCHESTRATOR, T.MODEL_ORCHESTRATION, T.TOOL_INTEGRATION):
        servers[service_type] = loopback({"/health": HEALTHY})
        Service.objects.create(name=service_type.lower(), type=service_type, url=servers[service_type].url,
                               health_url=servers[service_type].url + "/health", failures_before_critical=1)

    def sweep_and_read() -> str:
        health.health_check_now()
        return _report(reader, "agent_task_execution")["status"]

    _, metrics_key = api_key_create(name="prom", scopes=["metrics"])

    def metric_state() -> str:
        body = APIClient().get("/metrics", HTTP_AUTHORIZATION=f"Token {metrics_key}").content.decode()
        lines = [line for line in body.splitlines()
                 if line.startswith('berrys_workflow_readiness{') and 'workflow="agent_task_execution"' in line
                 and line.endswith(" 1.0")]
        assert len(lines) == 1, lines
        return lines[0].split('state="')[1].split('"')[0]

    assert sweep_and_read() == "ready" and metric_state() == "ready"
    servers[T.TOOL_INTEGRATION].routes["/health"] = Reply(500)
    assert sweep_and_read() == "degraded" and metric_state() == "degraded"
    servers[T.MODEL_ORCHESTRATION].routes["/health"] = Reply(500)
    assert sweep_and_read() == "blocked" and metric_state() == "blocked"
    for service_type in servers:
        servers[service_type].routes["/health"] = HEALTHY
    # Recovery from critical needs successes_before_passing (1) good probe; breakers let the trial through.
    for svc in Service.objects.all():
        breaker_for(svc).reset(reason="test: services back")
    assert sweep_and_read() == "ready" and metric_state() == "ready"


REFUSING = Workflow(
    name="test_refuses_when_blocked", version=1, when_blocked="refuse",
    requires=(T.PLANNING_SYSTEM,), steps=[_step("plan", T.PLANNING_SYSTEM)],
)


@pytest.fixture
def refusing():
    register(REFUSING, replace=True)
    yield REFUSING
    unregister(REFUSING.name)


def test_a_workflow_may_refuse_starts_while_blocked(refusing, db, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    _, key = api_key_create(name="starter", scopes=["workflows"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    refused = client.post("/workflows/runs", {"workflow": refusing.name, "input": {}}, format="json")
    assert refused.status_code == 409
    assert refused.json()["code"] == "conflict"
    assert "PLANNING_SYSTEM (no instance registered)" in refused.json()["detail"]

    _up(T.PLANNING_SYSTEM)
    started = client.post("/workflows/runs", {"workflow": refusing.name, "input": {}}, format="json")
    assert started.status_code == 201, started.content
