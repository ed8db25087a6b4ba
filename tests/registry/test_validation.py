"""Bad input: a 400 naming the problem (never a 500, nothing written), oversize bodies: 413."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from registry.models import Service

BASE = {
    "name": "planner-1",
    "type": "PLANNING_SYSTEM",
    "url": "http://127.0.0.1:8001",
    "health_url": "http://127.0.0.1:8001/health",
    "metadata": {"version": "1.0.0"},
}


def _post(client, payload):
    return client.post("/registry/services", payload, format="json")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"status": "PLANNING"}, "status", "Unknown field"),
        ({"colour": "red"}, "colour", "Unknown field"),
        ({"name": None}, "name", "may not be null"),
        ({"name": ""}, "name", "may not be blank"),
        ({"name": "a" * 201}, "name", "no more than 200 characters"),
        ({"name": "bad\nname"}, "name", "control characters"),
        ({"type": "planning system"}, "type", "UPPER_SNAKE_CASE"),
        ({"type": "Planning_System"}, "type", "UPPER_SNAKE_CASE"),
        ({"type": 42}, "type", "UPPER_SNAKE_CASE"),
        ({"url": "ftp://files.example"}, "url", "http:// or https://"),
        ({"url": "http://"}, "url", "must have a host"),
        ({"url": "not a url"}, "url", "http:// or https://"),
        ({"url": "http://user:pw@host"}, "url", "credentials"),
        ({"url": "http://host:99999"}, "url", "Not a valid URL"),
        ({"url": "http://169.254.169.254/latest"}, "url", "link-local"),
        ({"url": "http://169.254.169.254./"}, "url", "link-local"),
        ({"url": "http://2852039166/"}, "url", "link-local"),
        ({"url": "http://0xa9.0xfe.0xa9.0xfe/"}, "url", "link-local"),
        ({"url": "http://169.254.43518/"}, "url", "link-local"),
        ({"url": "http://[fe80::1]:8000"}, "url", "link-local"),
        ({"url": "http://[::ffff:169.254.169.254]/"}, "url", "link-local"),
        ({"url": "http://[fe80::1%25eth0]/"}, "url", "must not contain '%'"),
        ({"health_url": "http://169.254.1.1/health"}, "health_url", "link-local"),
        ({"url": "http://" + "a" * 2000}, "url", "no more than 2000 characters"),
        ({"metadata": ["version"]}, "metadata", "Expected a dictionary"),
        ({"metadata": {"v": "x\u0000y"}}, "metadata", "NUL"),
        ({"metadata": {"blob": "x" * 20_000}}, "metadata", "the limit is 16384"),
        ({"capabilities": "plan"}, "capabilities", "Expected a list"),
        ({"capabilities": ["x"] * 101}, "capabilities", "no more than 100"),
        ({"tags": [""]}, "tags", "may not be blank"),
        ({"endpoints": [{"method": "FETCH", "path": "/x"}]}, "endpoints", "not a valid choice"),
        ({"endpoints": [{"method": "GET", "path": "x"}]}, "endpoints", "does not match"),
        ({"endpoints": [{"method": "GET", "path": "/x", "auth": "none"}]}, "endpoints", "Unknown field"),
        ({"criticality": "very"}, "criticality", "not a valid choice"),
        ({"check_interval_seconds": 0}, "check_interval_seconds", "greater than or equal to 1"),
        ({"ttl_seconds": 10**12}, "ttl_seconds", "less than or equal to"),
        ({"check_timeout_seconds": "soon"}, "check_timeout_seconds", "A valid number is required"),
        # The sweep's bounds (a black hole probed every second for 300 s froze monitoring).
        ({"check_interval_seconds": 1}, "check_interval_seconds", "at least 5 seconds (HEALTH_MIN_INTERVAL_SECONDS)"),
        ({"check_timeout_seconds": 300}, "check_timeout_seconds", "at most 10 seconds (HEALTH_MAX_TIMEOUT_SECONDS)"),
    ],
)
def test_it_rejects_bad_registrations_naming_the_field(register_client, change, field, message):
    response = _post(register_client, {**BASE, **change})
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    # Items of lists are named by position, e.g. "tags.0" or "endpoints.0.method".
    messages = [m for key, msgs in body["errors"].items() if key.split(".")[0] == field for m in msgs]
    assert messages, body
    assert message in " ".join(messages), body
    assert field in body["detail"]
    assert Service.objects.count() == 0


def test_it_names_every_unknown_field(register_client):
    body = _post(register_client, {**BASE, "status": "PLANNING", "owner": "x"}).json()
    assert sorted(body["errors"]) == ["owner", "status"]


def test_it_reports_unknown_fields_together_with_other_problems(register_client):
    payload = {k: v for k, v in BASE.items() if k != "url"} | {"status": "PLANNING", "type": "bad type"}
    body = _post(register_client, payload).json()
    assert sorted(body["errors"]) == ["status", "type", "url"]


@pytest.mark.parametrize("missing", ["name", "type", "url"])
def test_it_requires_name_type_and_url(register_client, missing):
    payload = {k: v for k, v in BASE.items() if k != missing}
    body = _post(register_client, payload).json()
    assert body["errors"][missing] == ["This field is required."]


def test_malformed_json_is_a_400(register_client):
    response = register_client.generic(
        "POST", "/registry/services", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_a_json_array_body_is_a_400(register_client):
    response = register_client.post("/registry/services", [BASE], format="json")
    assert response.status_code == 400
    assert "Expected a dictionary" in response.json()["detail"]


def test_a_body_over_the_limit_is_a_413(register_client, settings):
    payload = {**BASE, "metadata": {"blob": "x" * (settings.API_MAX_BODY_BYTES + 10)}}
    response = register_client.generic(
        "POST", "/registry/services", json.dumps(payload), content_type="application/json"
    )
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "payload_too_large"
    assert f"the limit is {settings.API_MAX_BODY_BYTES} bytes" in body["detail"]
    assert Service.objects.count() == 0


def test_patch_refuses_identity_and_unknown_fields(register_client):
    service_id = _post(register_client, BASE).json()["id"]
    response = register_client.patch(
        f"/registry/services/{service_id}", {"url": "http://127.0.0.1:9", "status": "passing"}, format="json"
    )
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert "identity" in errors["url"][0]


def test_maintenance_needs_a_boolean(register_client):
    service_id = _post(register_client, BASE).json()["id"]
    response = register_client.post(
        f"/registry/services/{service_id}/maintenance", {"enabled": "perhaps"}, format="json"
    )
    assert response.status_code == 400
    assert "Must be a valid boolean" in response.json()["errors"]["enabled"][0]


def test_list_filters_are_validated(read_client):
    response = read_client.get("/registry/services?status=sleepy")
    assert response.status_code == 400
    assert "status" in response.json()["errors"]


def test_discovery_rejects_a_type_that_is_not_upper_snake(read_client):
    response = read_client.get("/discovery/planning-system")
    assert response.status_code == 400
    assert "UPPER_SNAKE_CASE" in response.json()["detail"]


def test_unknown_paths_answer_json_404(read_client):
    response = read_client.get("/registry/nothing-here")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


class TestAllowedNetworks:
    @pytest.fixture(autouse=True)
    def _allow_loopback(self):
        import ipaddress

        with override_settings(REGISTRY_ALLOWED_NETWORKS=[ipaddress.ip_network("127.0.0.0/8")]):
            yield

    def test_it_accepts_an_address_inside(self, register_client):
        assert _post(register_client, BASE).status_code == 201

    def test_it_refuses_an_address_outside(self, register_client):
        response = _post(register_client, {**BASE, "url": "http://10.1.2.3:80"})
        assert response.status_code == 400
        assert "outside REGISTRY_ALLOWED_NETWORKS (127.0.0.0/8)" in response.json()["errors"]["url"][0]

    def test_it_resolves_names_only_when_an_allow_list_is_set(self, register_client):
        assert _post(register_client, {**BASE, "url": "http://localhost:8001"}).status_code == 201
        response = _post(register_client, {**BASE, "url": "http://no-such-host.invalid:80"})
        assert response.status_code == 400
        assert "does not resolve" in response.json()["errors"]["url"][0]


def test_without_an_allow_list_names_are_not_resolved(register_client):
    response = _post(register_client, {**BASE, "url": "http://no-such-host.invalid:80"})
    assert response.status_code == 201


@pytest.mark.parametrize("length", ["-5", "ten"])
def test_a_bad_content_length_is_a_400(register_client, length):
    response = register_client.generic(
        "POST", "/registry/services", json.dumps(BASE), content_type="application/json",
        CONTENT_LENGTH=length,
    )
    assert response.status_code == 400
    assert response.json() == {"detail": f"Content-Length {length!r} is not a valid length.", "code": "invalid"}
