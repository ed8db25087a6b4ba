"""The rest of /registry/services: list filters and pagination, detail, PATCH, DELETE, heartbeat, maintenance."""

from __future__ import annotations

import pytest
import time_machine
from django.utils import timezone

from registry.models import ApiKey, HealthStatus, Service, StatusChange


def _svc(name, type_="PLANNING_SYSTEM", **fields) -> Service:
    # Owned by the register_client persona's key when the test uses it (only the owner may change it).
    fields.setdefault("owner", ApiKey.objects.filter(name="registrar").first())
    return Service.objects.create(name=name, type=type_, url=f"http://127.0.0.1/{name}", **fields)


def _names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [s["name"] for s in response.json()["results"]]


def test_it_filters_by_type_status_and_name(read_client):
    _svc("planner-1", status=HealthStatus.PASSING)
    _svc("planner-2", status=HealthStatus.CRITICAL)
    _svc("tools", type_="TOOL_INTEGRATION", status=HealthStatus.PASSING)
    assert _names(read_client.get("/registry/services?type=PLANNING_SYSTEM")) == ["planner-1", "planner-2"]
    assert _names(read_client.get("/registry/services?status=passing")) == ["planner-1", "tools"]
    assert _names(read_client.get("/registry/services?name=PLANNER-2")) == ["planner-2"]


@pytest.mark.both_dbs  # registry/filters.py branches on the vendor: both branches run
def test_several_tags_are_anded(read_client):
    _svc("a", tags=["eu", "canary"])
    _svc("b", tags=["eu"])
    _svc("c", tags=["us", "canary"])
    assert _names(read_client.get("/registry/services?tag=eu")) == ["a", "b"]
    assert _names(read_client.get("/registry/services?tag=eu&tag=canary")) == ["a"]
    assert _names(read_client.get("/registry/services?tag=eu&tag=us")) == []


@pytest.mark.both_dbs
def test_it_filters_by_capability(read_client):
    _svc("a", capabilities=["plan", "estimate"])
    _svc("b", capabilities=["plan"])
    assert _names(read_client.get("/registry/services?capability=estimate")) == ["a"]
    assert _names(read_client.get("/registry/services?capability=plan")) == ["a", "b"]


def test_the_list_is_paginated(read_client):
    for i in range(5):
        _svc(f"s{i}")
    body = read_client.get("/registry/services?page_size=2&page=2").json()
    assert body["count"] == 5
    assert [s["name"] for s in body["results"]] == ["s2", "s3"]
    assert body["next"] and body["previous"]
    assert read_client.get("/registry/services?page=9").status_code == 404


def test_it_reads_one_service_and_404s_for_unknown_ids(read_client):
    s = _svc("a")
    assert read_client.get(f"/registry/services/{s.pk}/").json()["name"] == "a"
    response = read_client.get("/registry/services/999999")
    assert response.status_code == 404
    assert response.json() == {"detail": "No registered service with id 999999.", "code": "not_found"}


def test_patch_changes_only_the_given_fields(register_client):
    s = _svc("a", tags=["x"], capabilities=["plan"])
    response = register_client.patch(
        f"/registry/services/{s.pk}", {"tags": ["y"], "criticality": "critical"}, format="json"
    )
    assert response.status_code == 200
    s.refresh_from_db()
    assert s.tags == ["y"] and s.criticality == "critical" and s.capabilities == ["plan"]


def test_delete_deregisters_and_keeps_an_epitaph(register_client):
    s = _svc("a", status=HealthStatus.PASSING)
    assert register_client.delete(f"/registry/services/{s.pk}").status_code == 204
    assert not Service.objects.filter(pk=s.pk).exists()
    change = StatusChange.objects.get(service_name="a")
    assert change.new_status == StatusChange.DEREGISTERED and change.old_status == "passing"
    assert register_client.delete(f"/registry/services/{s.pk}").status_code == 404


def test_heartbeat_records_the_time(register_client):
    s = _svc("a")
    with time_machine.travel("2026-01-02 03:04:05+00:00", tick=False):
        response = register_client.put(f"/registry/services/{s.pk}/heartbeat")
    assert response.status_code == 200
    s.refresh_from_db()
    assert s.last_heartbeat_at.isoformat() == "2026-01-02T03:04:05+00:00"
    assert s.status == HealthStatus.UNKNOWN  # probed services: the sweep decides


def test_a_heartbeat_makes_a_ttl_service_passing(register_client):
    s = _svc("a", ttl_seconds=30, status=HealthStatus.CRITICAL)
    register_client.put(f"/registry/services/{s.pk}/heartbeat")
    s.refresh_from_db()
    assert s.status == HealthStatus.PASSING
    assert StatusChange.objects.filter(service=s, old_status="critical", new_status="passing").exists()


def test_maintenance_on_and_off_is_recorded_and_makes_the_service_due(register_client):
    s = _svc("a", status=HealthStatus.PASSING, next_check_at=timezone.now() + timezone.timedelta(hours=1))
    url = f"/registry/services/{s.pk}/maintenance"
    body = register_client.post(url, {"enabled": True, "reason": "upgrade"}, format="json").json()
    assert body["status"] == "maintenance"
    assert body["status_reason"] == "Maintenance (by apikey:registrar): upgrade"
    before = timezone.now()
    body = register_client.post(url, {"enabled": False}, format="json").json()
    assert body["status"] == "unknown"
    s.refresh_from_db()
    assert s.next_check_at <= timezone.now() and s.next_check_at >= before
    flips = list(StatusChange.objects.filter(service=s).order_by("at").values_list("old_status", "new_status"))
    assert flips == [("passing", "maintenance"), ("maintenance", "unknown")]


def test_maintenance_off_on_a_service_not_in_maintenance_changes_nothing(register_client):
    s = _svc("a", status=HealthStatus.PASSING)
    body = register_client.post(f"/registry/services/{s.pk}/maintenance", {"enabled": False},
                                format="json").json()
    assert body["status"] == "passing"
    assert not StatusChange.objects.exists()
