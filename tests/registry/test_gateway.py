"""The gateway: /gateway/{service_type}/{path} through the ServiceClient, against real simulators."""

from __future__ import annotations

import socket

import pytest
import requests

from registry.adapters import adapter_cache_clear
from registry.breakers import breaker_for, breaker_forget
from registry.models import HealthStatus, Service
from simulators.process import SimulatorProcess

PC, TI = "PROJECT_COORDINATOR", "TOOL_INTEGRATION"


@pytest.fixture(scope="module")
def sims():
    stack = SimulatorProcess.start(only=[PC, TI])
    yield stack
    stack.stop()


@pytest.fixture
def registered(db, sims):
    adapter_cache_clear()
    rows = [
        Service.objects.create(name=service_type.lower(), type=service_type, url=url,
                               status=HealthStatus.PASSING)
        for service_type, url in sims.urls.items()
    ]
    for row in rows:
        breaker_forget(service_id=row.pk)  # ids repeat across sessions; breaker state lives in Redis
    yield sims
    for svc in sims.ready["services"]:
        sims.reset(svc["slug"])
    for row in rows:
        breaker_forget(service_id=row.pk)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_it_needs_a_key_with_the_gateway_scope(anon_client, read_client, registered):
    assert anon_client.get("/gateway/TOOL_INTEGRATION/tools").status_code == 401
    denied = read_client.get("/gateway/TOOL_INTEGRATION/tools")
    assert denied.status_code == 403 and "gateway" in denied.json()["detail"]


def test_it_forwards_the_chat_payload_through_the_adapter_and_reads_back(full_client, registered):
    created = full_client.post("/gateway/PROJECT_COORDINATOR/projects",
                               {"name": "Via gateway", "status": "PLANNING"}, format="json")
    assert created.status_code == 201, created.content
    assert created["X-Upstream-Service"] == "project_coordinator"
    project_id = created.json()["id"]
    fetched = full_client.get(f"/gateway/PROJECT_COORDINATOR/projects/{project_id}")
    assert fetched.status_code == 200 and fetched.json()["name"] == "Via gateway"
    patched = full_client.patch(f"/gateway/project_coordinator/projects/{project_id}",
                                {"status": "ACTIVE"}, format="json")
    assert patched.status_code == 200 and patched.json()["status"] == "ACTIVE"


def test_it_forwards_query_parameters(full_client, registered):
    response = full_client.get("/gateway/TOOL_INTEGRATION/tools?capability=code_execution")
    assert response.status_code == 200
    assert response.json() == {"tools": [{"name": "code-runner", "capability": "code_execution"}]}


def test_the_services_own_errors_pass_through_with_their_body(full_client, registered):
    response = full_client.get("/gateway/PROJECT_COORDINATOR/projects/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Project nope not found"}


def test_an_unknown_type_is_404_in_the_api_error_shape(full_client, registered):
    response = full_client.get("/gateway/PLANNING_SYSTEM/plans")
    assert response.status_code == 404
    assert response.json() == {"detail": "No service of type PLANNING_SYSTEM found",
                               "code": "service_not_found"}
    bad = full_client.get("/gateway/not-a-type!/x")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"


def test_no_eligible_instance_is_503(full_client, registered):
    Service.objects.filter(type=TI).update(status=HealthStatus.CRITICAL)
    response = full_client.get("/gateway/TOOL_INTEGRATION/tools")
    assert response.status_code == 503
    assert response.json()["code"] == "no_eligible_service"


def test_an_unreachable_instance_is_502(full_client, registered):
    Service.objects.filter(type=TI).update(url=f"http://127.0.0.1:{_closed_port()}")
    response = full_client.get("/gateway/TOOL_INTEGRATION/tools")
    assert response.status_code == 502
    assert response.json()["code"] == "service_connection_error"


def _posts_seen(sims) -> int:
    counters = requests.get(sims.urls[PC] + "/_control", timeout=5).json()["counters"]
    return counters.get("POST /projects", 0)


def test_a_post_is_sent_once_even_when_the_service_answers_503(full_client, registered):
    before = _posts_seen(registered)
    registered.faults(PC, down=True)
    response = full_client.post("/gateway/PROJECT_COORDINATOR/projects", {"name": "Once"}, format="json")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"  # the service's own body
    assert _posts_seen(registered) - before == 1


def _gets_seen(sims, route: str) -> int:
    counters = requests.get(sims.urls[PC] + "/_control", timeout=5).json()["counters"]
    return counters.get(route, 0)


def test_a_get_is_retried_when_the_service_answers_503(full_client, registered, settings):
    settings.SERVICE_CLIENT_RETRIES = 2
    settings.SERVICE_CLIENT_BACKOFF_BASE_SECONDS = 0.01
    before = _gets_seen(registered, "GET /projects/{project_id}")
    registered.faults(PC, down=True)
    response = full_client.get("/gateway/PROJECT_COORDINATOR/projects/p-1")
    assert response.status_code == 503
    assert _gets_seen(registered, "GET /projects/{project_id}") - before == 3


def test_an_open_circuit_is_503_and_nothing_is_sent(full_client, registered):
    service = Service.objects.get(type=TI)
    breaker_for(service).force_open(reason="test", actor="tester")
    before = requests.get(registered.urls[TI] + "/_control", timeout=5).json()["counters"]
    response = full_client.get("/gateway/TOOL_INTEGRATION/tools")
    assert response.status_code == 503
    assert response.json()["code"] == "circuit_open"
    after = requests.get(registered.urls[TI] + "/_control", timeout=5).json()["counters"]
    assert after.get("GET /tools", 0) == before.get("GET /tools", 0)


def test_the_schema_describes_the_gateway_and_its_errors(anon_client, db):
    schema = anon_client.get("/api/schema?format=json").json()
    operations = schema["paths"]["/gateway/{service_type}/{path}"]
    assert set(operations) >= {"get", "post", "put", "patch", "delete"}
    assert set(operations["post"]["responses"]) >= {"200", "400", "404", "502", "503"}
