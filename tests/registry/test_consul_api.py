"""The Consul-compatible read API (/v1/), read by py-consul (a Consul client from PyPI) over HTTP."""

from __future__ import annotations

import threading
import time

import consul
import pytest
import requests
from django.db import connection

from registry import health
from registry.auth import api_key_create
from registry.models import HealthStatus, Service
from registry.watch import index_read
from tests.registry.loopback import Reply

pytestmark = [pytest.mark.both_dbs, pytest.mark.usefixtures("fresh_index_feed")]

HEALTHY = Reply(200, {"status": "healthy"})


@pytest.fixture
def key(transactional_db) -> str:
    return api_key_create(name="prometheus", scopes=["metrics"])[1]


@pytest.fixture
def agent(live_server, key):
    host, port = live_server.url.removeprefix("http://").split(":")
    client = consul.Consul(host=host, port=int(port), token=key, connections_timeout=30)
    yield client
    client.http.session.close()  # ends the server's keep-alive thread (and its database connection)


def _service(**fields) -> Service:
    fields.setdefault("type", "PLANNING_SYSTEM")
    fields.setdefault("url", "http://127.0.0.1:8911")
    fields.setdefault("status", HealthStatus.PASSING)
    fields.setdefault("health_url", fields["url"] + "/health")
    return Service.objects.create(**fields)


def _change_later(seconds: float, **update) -> threading.Thread:
    def run():
        time.sleep(seconds)
        Service.objects.filter(name="planner-1").update(**update)
        connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_py_consul_reads_the_catalog_with_consul_field_types(agent):
    planner = _service(name="planner-1", tags=["primary", "v1"], metadata={"version": "1.0.0", "replicas": 3})
    _service(name="planner-2", url="http://localhost:8912", tags=["v1"], status=HealthStatus.WARNING)
    _service(name="coordinator", type="PROJECT_COORDINATOR", url="https://127.0.0.1", health_url="",
             ttl_seconds=30, status=HealthStatus.MAINTENANCE, status_reason="upgrading")
    _service(name="pending", type="TOOL_INTEGRATION", pending_approval=True)

    index, services = agent.catalog.services()
    assert services == {"PLANNING_SYSTEM": ["primary", "v1"], "PROJECT_COORDINATOR": []}
    assert int(index) == index_read() >= 1

    _, entries = agent.catalog.service("planning-system")  # the lower-case alias
    first = entries[0]
    assert first["ServiceID"] == str(planner.pk) and isinstance(first["ServicePort"], int)
    assert (first["ServiceName"], first["ServiceAddress"], first["ServicePort"]) == ("PLANNING_SYSTEM", "127.0.0.1", 8911)
    assert first["ServiceMeta"] == {"version": "1.0.0"}  # string values only
    assert first["ServiceTags"] == ["primary", "v1"] and first["Datacenter"] == "dc1"
    assert first["ModifyIndex"] >= first["CreateIndex"] >= 1
    _, tagged = agent.catalog.service("PLANNING_SYSTEM", tag="primary")
    assert [e["ServiceID"] for e in tagged] == [str(planner.pk)]

    _, passing = agent.health.service("PLANNING_SYSTEM", passing=True)
    assert [e["Service"]["ID"] for e in passing] == [str(planner.pk)]
    _, everything = agent.health.service("PLANNING_SYSTEM")
    assert [e["Checks"][0]["Status"] for e in everything] == ["passing", "warning"]
    check = everything[0]["Checks"][0]
    assert (check["CheckID"], check["Type"], check["ServiceID"]) == (f"service:{planner.pk}", "http", str(planner.pk))

    _, [coordinator] = agent.health.service("PROJECT_COORDINATOR")
    assert coordinator["Service"]["Port"] == 443
    [maint] = coordinator["Checks"]
    assert maint["CheckID"] == f"_service_maintenance:{coordinator['Service']['ID']}"
    assert (maint["Status"], maint["Notes"], maint["Name"]) == ("critical", "upgrading", "Service Maintenance Mode")

    _, critical = agent.health.state("critical")
    assert [c["CheckID"] for c in critical] == [maint["CheckID"]]
    _, unknown = agent.health.service("NOT_REGISTERED")
    assert unknown == []


def test_a_blocking_query_returns_after_wait_when_nothing_changes(agent):
    _service(name="planner-1")
    index, _ = agent.health.service("PLANNING_SYSTEM")
    started = time.monotonic()
    again, _ = agent.health.service("PLANNING_SYSTEM", index=index, wait="1s")
    elapsed = time.monotonic() - started
    assert again == index
    assert 1.0 <= elapsed < 1.0 + 1.0 / 16 + 1.0  # the wait, Consul's jitter (≤ wait/16), slack


def test_a_blocking_query_returns_promptly_on_a_change(agent):
    _service(name="planner-1")
    index, _ = agent.health.service("PLANNING_SYSTEM")
    changer = _change_later(0.3, status=HealthStatus.CRITICAL)
    started = time.monotonic()
    new_index, entries = agent.health.service("PLANNING_SYSTEM", index=index, wait="20s")
    elapsed = time.monotonic() - started
    changer.join()
    assert int(new_index) > int(index)
    assert entries[0]["Checks"][0]["Status"] == "critical"
    assert elapsed < 2.0  # woken by the change, not by the 20 s wait


def test_a_change_to_another_type_does_not_wake_a_service_watch(agent):
    _service(name="planner-1")
    _service(name="coordinator", type="PROJECT_COORDINATOR")
    index, _ = agent.health.service("PLANNING_SYSTEM")
    Service.objects.filter(name="coordinator").update(status=HealthStatus.CRITICAL)
    again, _ = agent.health.service("PLANNING_SYSTEM", index=index, wait="500ms")
    assert again == index
    moved, _ = agent.catalog.services(index=index, wait="5s")  # the catalog index did move
    assert int(moved) > int(index)


def test_the_index_moves_only_when_what_readers_see_changes(loopback, transactional_db):
    server = loopback({"/h": HEALTHY})
    svc = _service(name="planner-1", url=server.url, health_url=server.url + "/h", status=HealthStatus.UNKNOWN)
    before = index_read()
    health.health_check_now(service_ids=[svc.pk])  # unknown -> passing: a change
    after_first = index_read()
    assert after_first > before
    health.health_check_now(service_ids=[svc.pk])  # passing again: timestamps and counters only
    health.health_check_now(service_ids=[svc.pk])
    assert index_read() == after_first
    Service.objects.filter(pk=svc.pk).update(status_reason="slow: 900 ms", consecutive_failures=1)
    assert index_read() == after_first
    Service.objects.filter(pk=svc.pk).update(tags=["new"])
    assert index_read() > after_first
    assert Service.objects.get(pk=svc.pk).modify_index == index_read()
    before_delete = index_read(service_type="PLANNING_SYSTEM")
    svc.delete()
    assert index_read(service_type="PLANNING_SYSTEM") > before_delete  # a deletion moves the type's index


def test_tokens_as_header_query_or_bearer_and_scopes(live_server, transactional_db):
    _service(name="planner-1")
    _, reader = api_key_create(name="reader", scopes=["registry:read"])
    _, writer = api_key_create(name="writer", scopes=["registry:write"])
    url = live_server.url + "/v1/catalog/services"
    assert requests.get(url, headers={"X-Consul-Token": reader}, timeout=10).status_code == 200
    assert requests.get(url, params={"token": reader}, timeout=10).status_code == 200
    assert requests.get(url, headers={"Authorization": f"Bearer {reader}"}, timeout=10).status_code == 200
    for headers in ({}, {"X-Consul-Token": "bp_unknown"}, {"X-Consul-Token": writer}):
        response = requests.get(url, headers=headers, timeout=10)
        assert response.status_code == 403, headers  # Consul answers 403 to every token problem
        assert "X-Consul-Index" not in response.headers


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/catalog/services?index=abc", "index"),
        ("/v1/catalog/services?index=1&wait=forever", "wait"),
        ("/v1/health/state/sideways", "state"),
        ("/v1/health/service/PLANNING_SYSTEM?passing=maybe", "passing"),
        ("/v1/health/service/PLANNING_SYSTEM?filter=Service.Port==80", "filter"),
        ("/v1/catalog/services?dc=elsewhere", "dc"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(live_server, key, path, field):
    response = requests.get(live_server.url + path, headers={"X-Consul-Token": key}, timeout=10)
    assert response.status_code == 400, response.text
    assert field in response.json().get("errors", {field: ""}) or field in response.json()["detail"]


def test_only_get_is_allowed(live_server, key):
    response = requests.post(live_server.url + "/v1/catalog/services", headers={"X-Consul-Token": key}, timeout=10)
    assert response.status_code == 405


def test_headers_are_consuls(live_server, key):
    response = requests.get(live_server.url + "/v1/catalog/services?stale", headers={"X-Consul-Token": key},
                            timeout=10)
    assert response.headers["Content-Type"] == "application/json"
    assert int(response.headers["X-Consul-Index"]) >= 1
    assert response.headers["X-Consul-KnownLeader"] == "true"
    assert response.headers["X-Consul-LastContact"] == "0"
    assert response.headers["X-Consul-Effective-Consistency"] == "stale"
