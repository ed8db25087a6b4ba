"""GET /discovery/{type}: rotation, eligibility order, maintenance exclusion, both "not found" answers."""

from __future__ import annotations

import pytest

from registry.models import HealthStatus, Service


def _svc(name: str, status: str, type_: str = "PLANNING_SYSTEM") -> Service:
    return Service.objects.create(name=name, type=type_, url=f"http://127.0.0.1/{name}", status=status)


def _names(client, times: int, type_: str = "PLANNING_SYSTEM") -> list[str]:
    names = []
    for _ in range(times):
        response = client.get(f"/discovery/{type_}")
        assert response.status_code == 200, response.content
        names.append(response.json()["name"])
    return names


def test_it_rotates_between_passing_instances(read_client):
    for name in ("a", "b", "c"):
        _svc(name, HealthStatus.PASSING)
    names = _names(read_client, 6)
    assert sorted(set(names)) == ["a", "b", "c"]
    assert names[:3] != names[0:1] * 3
    assert names[3:] == names[:3]  # round robin: the same order again


def test_passing_instances_come_before_warning_ones(read_client):
    _svc("slow", HealthStatus.WARNING)
    _svc("good", HealthStatus.PASSING)
    _svc("new", HealthStatus.UNKNOWN)
    assert set(_names(read_client, 4)) == {"good"}


def test_warning_instances_serve_when_none_is_passing(read_client):
    _svc("slow-1", HealthStatus.WARNING)
    _svc("slow-2", HealthStatus.WARNING)
    _svc("new", HealthStatus.UNKNOWN)
    _svc("down", HealthStatus.CRITICAL)
    assert set(_names(read_client, 4)) == {"slow-1", "slow-2"}


def test_unchecked_instances_serve_only_when_no_checked_healthy_one_exists(read_client):
    _svc("new", HealthStatus.UNKNOWN)
    _svc("down", HealthStatus.CRITICAL)
    assert set(_names(read_client, 3)) == {"new"}


def test_maintenance_and_critical_instances_are_never_discovered(read_client):
    _svc("resting", HealthStatus.MAINTENANCE)
    _svc("down", HealthStatus.CRITICAL)
    _svc("ok", HealthStatus.PASSING)
    assert set(_names(read_client, 5)) == {"ok"}
    body = read_client.get("/discovery/PLANNING_SYSTEM?all=1").json()
    assert [s["name"] for s in body["services"]] == ["ok"]


def test_putting_an_instance_in_maintenance_removes_it_from_discovery(register_client):
    a = _svc("a", HealthStatus.PASSING)
    _svc("b", HealthStatus.PASSING)
    Service.objects.filter(pk=a.pk).update(owner=register_client.api_key)  # only its owner may
    response = register_client.post(
        f"/registry/services/{a.pk}/maintenance", {"enabled": True, "reason": "upgrade"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "maintenance"
    assert set(_names(register_client, 4)) == {"b"}


def test_all_lists_every_eligible_instance_best_first(read_client):
    _svc("w", HealthStatus.WARNING)
    _svc("p", HealthStatus.PASSING)
    _svc("x", HealthStatus.CRITICAL)
    body = read_client.get("/discovery/PLANNING_SYSTEM?all=1").json()
    assert body["type"] == "PLANNING_SYSTEM"
    assert body["count"] == 2
    assert [s["name"] for s in body["services"]] == ["p", "w"]


def test_no_instance_of_the_type_is_the_guides_404(read_client):
    _svc("other", HealthStatus.PASSING, type_="TOOL_INTEGRATION")
    response = read_client.get("/discovery/PLANNING_SYSTEM")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "No service of type PLANNING_SYSTEM found", "code": "service_not_found",
    }


@pytest.mark.parametrize("suffix", ["", "?all=1"])
def test_instances_none_of_them_eligible_is_a_503_listing_their_states(read_client, suffix):
    _svc("down", HealthStatus.CRITICAL)
    _svc("resting", HealthStatus.MAINTENANCE)
    response = read_client.get(f"/discovery/PLANNING_SYSTEM{suffix}")
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "no_eligible_service"
    assert "2 instance(s) of type PLANNING_SYSTEM registered but none is eligible" in body["detail"]
    assert "down: critical" in body["detail"]
    assert "resting: maintenance" in body["detail"]


def test_discovery_takes_at_most_two_queries(read_client, django_assert_max_num_queries):
    for name in ("a", "b"):
        _svc(name, HealthStatus.PASSING)
    read_client.get("/discovery/PLANNING_SYSTEM")  # first use of the key may record last_used_at
    with django_assert_max_num_queries(2):  # the key, the instances
        assert read_client.get("/discovery/PLANNING_SYSTEM").status_code == 200
