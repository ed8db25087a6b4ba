"""Every endpoint against every kind of caller: anonymous, bad, revoked, expired, read-only, register."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from registry.auth import api_key_create
from registry.models import ApiKey, HealthStatus, Service

# (method, path template, body, scope needed, status on success)
ENDPOINTS = [
    ("get", "/registry/services", None, "read", 200),
    ("post", "/registry/services", {"name": "new", "type": "PLANNING_SYSTEM", "url": "http://127.0.0.1:9001"},
     "register", 201),
    ("get", "/registry/services/{id}", None, "read", 200),
    ("patch", "/registry/services/{id}", {"tags": ["x"]}, "register", 200),
    ("delete", "/registry/services/{id}", None, "register", 204),
    ("put", "/registry/services/{id}/heartbeat", None, "register", 200),
    ("post", "/registry/services/{id}/maintenance", {"enabled": True, "reason": "upgrade"}, "register", 200),
    ("get", "/discovery/PLANNING_SYSTEM", None, "read", 200),
    ("get", "/discovery/PLANNING_SYSTEM?all=1", None, "read", 200),
]
IDS = [f"{m.upper()} {p}" for m, p, *_ in ENDPOINTS]


@pytest.fixture
def service(db) -> Service:
    return Service.objects.create(
        name="planner", type="PLANNING_SYSTEM", url="http://127.0.0.1:9000", status=HealthStatus.PASSING
    )


def _client(plain: str | None, scheme: str = "Token") -> APIClient:
    client = APIClient()
    if plain is not None:
        client.credentials(HTTP_AUTHORIZATION=f"{scheme} {plain}")
    return client


def _call(client, method, path, body, service):
    return getattr(client, method)(path.format(id=service.pk), body, format="json")


@pytest.mark.parametrize(("method", "path", "body", "scope", "ok"), ENDPOINTS, ids=IDS)
def test_anonymous_callers_get_401(service, method, path, body, scope, ok):
    response = _call(_client(None), method, path, body, service)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Authentication credentials were not provided.", "code": "not_authenticated",
    }
    assert response["WWW-Authenticate"].startswith("Token")


@pytest.mark.parametrize(("method", "path", "body", "scope", "ok"), ENDPOINTS, ids=IDS)
def test_an_unknown_key_gets_401(service, method, path, body, scope, ok):
    response = _call(_client("bp_not-a-real-key"), method, path, body, service)
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid API key."


@pytest.mark.parametrize(("method", "path", "body", "scope", "ok"), ENDPOINTS, ids=IDS)
def test_a_revoked_key_gets_401(service, method, path, body, scope, ok):
    key, plain = api_key_create(name="old", scopes=["read", "register"])
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    response = _call(_client(plain), method, path, body, service)
    assert response.status_code == 401
    assert response.json()["detail"] == "API key has been revoked."


@pytest.mark.parametrize(("method", "path", "body", "scope", "ok"), ENDPOINTS, ids=IDS)
def test_an_expired_key_gets_401(service, method, path, body, scope, ok):
    _, plain = api_key_create(
        name="late", scopes=["read", "register"], expires_at=timezone.now() - timedelta(seconds=1)
    )
    response = _call(_client(plain), method, path, body, service)
    assert response.status_code == 401
    assert response.json()["detail"] == "API key has expired."


@pytest.mark.parametrize(("method", "path", "body", "scope", "ok"), ENDPOINTS, ids=IDS)
def test_a_read_only_key_may_read_but_not_write(service, method, path, body, scope, ok):
    _, plain = api_key_create(name="reader", scopes=["read"])
    response = _call(_client(plain), method, path, body, service)
    if scope == "read":
        assert response.status_code == ok, response.content
    else:
        assert response.status_code == 403
        assert response.json() == {"detail": "This API key lacks the 'register' scope.",
                                   "code": "permission_denied"}


@pytest.mark.parametrize(("method", "path", "body", "scope", "ok"), ENDPOINTS, ids=IDS)
def test_a_register_key_may_do_everything_here(service, method, path, body, scope, ok):
    _, plain = api_key_create(name="registrar", scopes=["read", "register"])
    response = _call(_client(plain, scheme="Bearer"), method, path, body, service)
    assert response.status_code == ok, response.content


@pytest.mark.parametrize(("method", "path", "body", "scope", "ok"), ENDPOINTS, ids=IDS)
def test_a_register_only_key_cannot_read(service, method, path, body, scope, ok):
    _, plain = api_key_create(name="writer", scopes=["register"])
    response = _call(_client(plain), method, path, body, service)
    assert response.status_code == (403 if scope == "read" else ok)


def test_a_malformed_authorization_header_gets_401(service):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token two parts")
    response = client.get("/registry/services")
    assert response.status_code == 401
    assert "Malformed Authorization header" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/health", "/health/", "/api/schema", "/api/schema/"])
def test_health_and_schema_need_no_key(db, path):
    assert APIClient().get(path).status_code in (200, 503)


def test_the_admin_needs_a_login(db):
    response = APIClient().get("/admin/registry/service/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
