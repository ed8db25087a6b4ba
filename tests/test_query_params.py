"""Every GET endpoint of the API accepts exactly the query parameters its schema documents.

Driven by /api/schema itself, so a new endpoint or parameter is covered without
editing this file: an undocumented parameter is a 400 naming it; each documented
one is accepted (no "unknown" error). The gateway forwards its parameters to the
service, and /health is polled by load balancers: both are left out on purpose.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from rest_framework.test import APIClient

from registry.models import HealthStatus, Service

SKIPPED = {"/health"}


def _start(client, name: str) -> str:
    """A run owned by the client's key (a key sees its own runs)."""
    response = client.post("/workflows/runs", {"workflow": "project_creation", "input": {"name": name}},
                           format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


@pytest.fixture
def schema(db) -> dict:
    return APIClient().get("/api/schema?format=json").json()


@pytest.fixture
def gets(schema, full_client) -> list[tuple[str, dict]]:
    """(concrete path, operation) for every GET in the schema."""
    service = Service.objects.create(name="p1", type="PLANNING_SYSTEM", url="http://127.0.0.1:9",
                                     status=HealthStatus.PASSING, tags=["x"])
    run_id = _start(full_client, "A")
    values = {"id": service.pk, "run_id": run_id, "service_type": "PLANNING_SYSTEM"}
    out = []
    for template, ops in schema["paths"].items():
        if "get" not in ops or template in SKIPPED or template.startswith("/gateway/"):
            continue
        path = template
        for param in ops["get"].get("parameters", []):
            if param["in"] == "path":
                path = path.replace("{" + param["name"] + "}", str(values[param["name"]]))
        out.append((path, ops["get"]))
    assert len(out) >= 7, [p for p, _ in out]
    return out


def _example(param: dict, cursor: str) -> str:
    spec = param.get("schema", {})
    if spec.get("type") == "array":
        spec = spec.get("items", {})
    if param["name"] == "cursor":
        return cursor
    if param["name"] == "type":
        return "PLANNING_SYSTEM"
    if param["name"] == "index":  # a watch: 0 answers at once
        return "0"
    if param["name"] == "wait":
        return "10ms"
    if "enum" in spec:
        return str(spec["enum"][0])
    return {"integer": "1", "boolean": "true", "number": "1"}.get(
        spec.get("type"), "2026-01-01T00:00:00Z" if spec.get("format") == "date-time" else "x")


def test_every_get_endpoint_refuses_an_undocumented_parameter(gets, full_client):
    for path, op in gets:
        assert "400" in op["responses"], f"{path}: the schema must document the 400"
        response = full_client.get(path, {"not_a_param": "1"})
        assert response.status_code == 400, (path, response.status_code)
        assert "not_a_param" in response.json()["errors"], path


def test_every_documented_parameter_is_accepted(gets, full_client):
    _start(full_client, "B")
    next_link = full_client.get("/workflows/runs?page_size=1").json()["next"]
    cursor = parse_qs(urlsplit(next_link).query)["cursor"][0]
    checked = 0
    for path, op in gets:
        for param in op.get("parameters", []):
            if param["in"] != "query":
                continue
            value = _example(param, cursor)
            response = full_client.get(path, {param["name"]: value})
            errors = response.json().get("errors", {}) if response.status_code == 400 else {}
            assert "Unknown query parameter" not in str(errors), (path, param["name"], errors)
            assert response.status_code in (200, 404, 503), (path, param["name"], value, response.content[:200])
            checked += 1
    assert checked >= 12
