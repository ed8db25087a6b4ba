"""A re-registration or heartbeat that changes nothing writes only the heartbeat timestamp."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from registry.models import HealthStatus, Service

pytestmark = pytest.mark.both_dbs


@pytest.fixture(autouse=True)
def _no_coalescing(settings):
    settings.REGISTRY_HEARTBEAT_COALESCE_SECONDS = 0  # every heartbeat writes, unless a test says

PAYLOAD = {"name": "planner", "type": "PLANNING_SYSTEM", "url": "http://127.0.0.1:9001",
           "metadata": {"version": "1.0.0"}, "tags": ["a"]}


def _writes(captured) -> list[str]:
    return [q["sql"] for q in captured.captured_queries
            if re.match(r"\s*(UPDATE|INSERT|DELETE|SAVEPOINT|BEGIN)", q["sql"], re.I)]


def test_an_unchanged_re_registration_updates_only_last_heartbeat_at(register_client):
    first = register_client.post("/registry/services", PAYLOAD, format="json")
    assert first.status_code == 201
    with CaptureQueriesContext(connection) as captured:
        again = register_client.post("/registry/services", PAYLOAD, format="json")
    assert again.status_code == 200
    writes = _writes(captured)
    assert len(writes) == 1
    assert re.search(r'SET "last_heartbeat_at" = [^,]+ WHERE', writes[0])
    assert not any("FOR UPDATE" in q["sql"] for q in captured.captured_queries)
    assert again.json()["last_heartbeat_at"] >= first.json()["last_heartbeat_at"]


def test_a_re_registration_that_changes_a_field_writes_that_field(register_client):
    register_client.post("/registry/services", PAYLOAD, format="json")
    with CaptureQueriesContext(connection) as captured:
        changed = register_client.post("/registry/services", dict(PAYLOAD, tags=["b"]), format="json")
    assert changed.status_code == 200 and changed.json()["tags"] == ["b"]
    update = [w for w in _writes(captured) if w.lstrip().upper().startswith("UPDATE")]
    assert len(update) == 1 and '"tags"' in update[0] and '"metadata"' not in update[0]
    assert Service.objects.get(name="planner").tags == ["b"]


def test_a_heartbeat_that_changes_nothing_is_one_update_of_the_timestamp(register_client):
    pk = register_client.post("/registry/services", PAYLOAD, format="json").json()["id"]
    Service.objects.filter(pk=pk).update(status=HealthStatus.PASSING)
    before = Service.objects.get(pk=pk).last_heartbeat_at
    with CaptureQueriesContext(connection) as captured:
        response = register_client.put(f"/registry/services/{pk}/heartbeat")
    assert response.status_code == 200
    writes = _writes(captured)
    assert len(writes) == 1 and re.search(r'SET "last_heartbeat_at" = [^,]+ WHERE', writes[0])
    assert Service.objects.get(pk=pk).last_heartbeat_at > before


def test_a_ttl_heartbeat_that_recovers_the_service_still_takes_the_locked_path(register_client):
    pk = register_client.post("/registry/services", dict(PAYLOAD, ttl_seconds=30), format="json").json()["id"]
    Service.objects.filter(pk=pk).update(status=HealthStatus.CRITICAL)
    response = register_client.put(f"/registry/services/{pk}/heartbeat")
    assert response.status_code == 200 and response.json()["status"] == "passing"
    assert register_client.put("/registry/services/999999/heartbeat").status_code == 404


def test_heartbeats_within_the_coalescing_window_write_nothing(register_client, settings):
    import time_machine
    from django.utils import timezone

    settings.REGISTRY_HEARTBEAT_COALESCE_SECONDS = 5
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        pk = register_client.post("/registry/services", PAYLOAD, format="json").json()["id"]
        recorded = Service.objects.get(pk=pk).last_heartbeat_at
        clock.shift(4.9)
        with CaptureQueriesContext(connection) as captured:
            assert register_client.put(f"/registry/services/{pk}/heartbeat").status_code == 200
            assert register_client.post("/registry/services", PAYLOAD, format="json").status_code == 200
        assert _writes(captured) == []
        assert Service.objects.get(pk=pk).last_heartbeat_at == recorded
        clock.shift(0.2)  # 5.1 s after the recorded one: written
        assert register_client.put(f"/registry/services/{pk}/heartbeat").status_code == 200
        assert Service.objects.get(pk=pk).last_heartbeat_at > recorded


def test_a_ttl_service_coalesces_at_most_a_tenth_of_its_ttl(register_client, settings):
    import time_machine
    from django.utils import timezone

    settings.REGISTRY_HEARTBEAT_COALESCE_SECONDS = 5
    with time_machine.travel(timezone.now(), tick=False) as clock:
        pk = register_client.post("/registry/services", dict(PAYLOAD, ttl_seconds=10), format="json").json()["id"]
        Service.objects.filter(pk=pk).update(status=HealthStatus.PASSING)
        recorded = Service.objects.get(pk=pk).last_heartbeat_at
        clock.shift(0.9)
        register_client.put(f"/registry/services/{pk}/heartbeat")
        assert Service.objects.get(pk=pk).last_heartbeat_at == recorded
        clock.shift(0.2)  # 1.1 s: past a tenth of the 10 s TTL
        register_client.put(f"/registry/services/{pk}/heartbeat")
        assert Service.objects.get(pk=pk).last_heartbeat_at > recorded
