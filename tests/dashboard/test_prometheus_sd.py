"""/registry/prometheus-sd: Prometheus HTTP service discovery of the registered services."""

from __future__ import annotations

import re

import pytest

from registry.models import HealthStatus, Service

pytestmark = pytest.mark.django_db

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _svc(name, type_, url, status=HealthStatus.PASSING, version="1.2.0"):
    return Service.objects.create(name=name, type=type_, url=url, status=status,
                                  metadata={"version": version} if version else {})


def test_it_lists_every_service_as_a_target_group_with_its_labels(read_client):
    _svc("planning-1", "PLANNING_SYSTEM", "http://10.0.0.5:8001/api")
    _svc("coord-1", "PROJECT_COORDINATOR", "https://coord.internal/", status=HealthStatus.CRITICAL,
         version=None)
    _svc("ipv6", "MODEL_ORCHESTRATION", "http://[::1]:9000")
    response = read_client.get("/registry/prometheus-sd")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body == [
        {"targets": ["[::1]:9000"], "labels": {"name": "ipv6", "type": "MODEL_ORCHESTRATION",
                                               "status": "passing", "version": "1.2.0"}},
        {"targets": ["10.0.0.5:8001"], "labels": {"name": "planning-1", "type": "PLANNING_SYSTEM",
                                                  "status": "passing", "version": "1.2.0"}},
        {"targets": ["coord.internal:443"], "labels": {"name": "coord-1", "type": "PROJECT_COORDINATOR",
                                                       "status": "critical", "version": ""}},
    ]


def test_labels_are_valid_prometheus_label_names_and_values_are_strings(read_client):
    _svc("a", "TOOL_INTEGRATION", "http://127.0.0.1:1234")
    for group in read_client.get("/registry/prometheus-sd/").json():
        assert all(isinstance(t, str) and re.match(r"^[^/]+:\d+$", t) for t in group["targets"])
        for name, value in group["labels"].items():
            assert LABEL_NAME.match(name) and not name.startswith("__")
            assert isinstance(value, str)


def test_it_answers_an_empty_list_when_nothing_is_registered(read_client):
    assert read_client.get("/registry/prometheus-sd").json() == []


def test_it_needs_a_key_with_the_read_scope(anon_client, db):
    from tests.conftest import _client_with

    assert anon_client.get("/registry/prometheus-sd").status_code == 401
    no_read = _client_with(["register"], "no-read")
    response = no_read.get("/registry/prometheus-sd")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_it_is_read_only(read_client):
    assert read_client.post("/registry/prometheus-sd", {}, format="json").status_code in (403, 405)


def test_the_schema_describes_it(read_client):
    response = read_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert "/registry/prometheus-sd" in response.content.decode()
