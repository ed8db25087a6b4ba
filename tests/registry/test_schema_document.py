"""/api/schema describes the registry accurately: paths, the key scheme, error shapes."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient


@pytest.fixture
def schema(db) -> dict:
    response = APIClient().get("/api/schema?format=json")
    assert response.status_code == 200
    return response.json()


def test_it_lists_every_registry_path_once_without_trailing_slashes(schema):
    ours = {
        "/registry/services", "/registry/services/{id}", "/registry/services/{id}/heartbeat",
        "/registry/services/{id}/maintenance", "/discovery/{service_type}", "/health",
        "/registry/prometheus-sd",  # the dashboard's Prometheus HTTP SD endpoint
    }
    paths = set(schema["paths"])
    assert ours <= paths
    assert not {p + "/" for p in ours} & paths


def test_it_declares_the_api_key_scheme_and_health_needs_none(schema):
    scheme = schema["components"]["securitySchemes"]["ApiKey"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "Authorization"}
    assert schema["paths"]["/registry/services"]["post"]["security"] == [{"ApiKey": []}]
    assert "security" not in schema["paths"]["/health"]["get"] or \
        schema["paths"]["/health"]["get"]["security"] in ([], [{}])


def test_errors_are_documented_with_the_one_error_shape(schema):
    responses = schema["paths"]["/registry/services"]["post"]["responses"]
    assert set(responses) == {"200", "201", "400", "401", "403", "409", "413", "429"}
    ref = responses["400"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/Error"
    assert set(schema["components"]["schemas"]["Error"]["properties"]) == {"detail", "code", "errors"}
    discovery = schema["paths"]["/discovery/{service_type}"]["get"]["responses"]
    assert {"200", "400", "401", "403", "404", "503"} <= set(discovery)


@pytest.mark.parametrize("path", [
    "/registry/services/{id}/", "/registry/services/{id}/heartbeat/", "/discovery/PLANNING_SYSTEM/",
])
def test_trailing_slash_variants_answer_without_redirect(register_client, path):
    from registry.models import HealthStatus, Service

    svc = Service.objects.create(name="a", type="PLANNING_SYSTEM", url="http://127.0.0.1:1",
                                 status=HealthStatus.PASSING, owner=register_client.api_key)
    method = register_client.put if "heartbeat" in path else register_client.get
    assert method(path.format(id=svc.pk)).status_code == 200
