"""Registration: the guide's payload, re-registration in place, concurrent identical registrations."""

from __future__ import annotations

import threading

import pytest
from django.db import connections
from rest_framework.test import APIClient

from registry.auth import api_key_create
from registry.models import HealthStatus, Service

GUIDE_PAYLOAD = {
    "name": "my-service",
    "type": "MY_SERVICE_TYPE",
    "url": "http://my-service:8000",
    "health_url": "http://my-service:8000/health",
    "metadata": {"version": "1.0.0"},
}


def test_it_registers_the_guides_payload(register_client):
    response = register_client.post("/registry/services", GUIDE_PAYLOAD, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"] > 0
    for key, value in GUIDE_PAYLOAD.items():
        assert body[key] == value
    assert body["status"] == HealthStatus.UNKNOWN
    service = Service.objects.get(pk=body["id"])
    assert service.next_check_at is not None  # due for its first check at once
    assert service.last_heartbeat_at is not None


def test_it_accepts_a_trailing_slash_without_redirecting(register_client):
    response = register_client.post("/registry/services/", GUIDE_PAYLOAD, format="json")
    assert response.status_code == 201
    response = register_client.get("/registry/services/")
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_re_registration_updates_in_place_and_answers_200(register_client):
    first = register_client.post("/registry/services", GUIDE_PAYLOAD, format="json").json()
    again = dict(GUIDE_PAYLOAD, metadata={"version": "1.1.0"}, tags=["eu"])
    response = register_client.post("/registry/services", again, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == first["id"]
    assert body["metadata"] == {"version": "1.1.0"}
    assert body["type"] == "MY_SERVICE_TYPE"
    assert body["tags"] == ["eu"]
    assert Service.objects.count() == 1


def test_re_registration_never_changes_the_type(register_client):
    first = register_client.post("/registry/services", GUIDE_PAYLOAD, format="json").json()
    response = register_client.post(
        "/registry/services", dict(GUIDE_PAYLOAD, type="PLANNING_SYSTEM"), format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert "cannot change its type to PLANNING_SYSTEM" in response.json()["detail"]
    assert Service.objects.get(pk=first["id"]).type == "MY_SERVICE_TYPE"


def test_re_registration_keeps_fields_it_omits(register_client):
    register_client.post("/registry/services", dict(GUIDE_PAYLOAD, capabilities=["plan"]), format="json")
    body = register_client.post("/registry/services", GUIDE_PAYLOAD, format="json").json()
    assert body["capabilities"] == ["plan"]


def test_the_same_name_at_another_url_is_another_instance(register_client):
    register_client.post("/registry/services", GUIDE_PAYLOAD, format="json")
    response = register_client.post(
        "/registry/services", dict(GUIDE_PAYLOAD, url="http://my-service-2:8000"), format="json"
    )
    assert response.status_code == 201
    assert Service.objects.count() == 2


def test_it_stores_every_optional_field(register_client):
    payload = dict(
        GUIDE_PAYLOAD,
        capabilities=["strategic-planning", "tactical-planning"],
        endpoints=[{"method": "POST", "path": "/plans/strategic"}],
        tags=["eu-west", "canary"],
        criticality="critical",
        check_interval_seconds=30,
        check_timeout_seconds=2.5,
        ttl_seconds=None,
        deregister_after_seconds=3600,
    )
    body = register_client.post("/registry/services", payload, format="json").json()
    service = Service.objects.get(pk=body["id"])
    assert service.endpoints == [{"method": "POST", "path": "/plans/strategic"}]
    assert service.criticality == "critical"
    assert service.check_interval_seconds == 30
    assert service.deregister_after_seconds == 3600


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_identical_registrations_make_one_row_and_no_error():
    _, plain = api_key_create(name="racer", scopes=["register"])
    barrier = threading.Barrier(50)
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def register():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
        try:
            barrier.wait(timeout=30)
            response = client.post("/registry/services", GUIDE_PAYLOAD, format="json")
            with lock:
                statuses.append(response.status_code)
        except BaseException as exc:  # noqa: BLE001 - reported below
            with lock:
                errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=register) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(statuses) == 50
    assert statuses.count(201) == 1
    assert statuses.count(200) == 49
    assert Service.objects.filter(name="my-service").count() == 1
