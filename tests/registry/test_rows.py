"""The hot paths' fixed-SQL reads build the same Service as the ORM, and a heartbeat's
UPDATE touches only its column: no index-keeping trigger, a HOT update on PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from registry.models import ApiKey, HealthStatus, Service
from registry.rows import service_by_identity, service_by_pk, service_heartbeat_set

pytestmark = pytest.mark.both_dbs


def _fields(service: Service) -> dict:
    return {f.attname: getattr(service, f.attname) for f in Service._meta.concrete_fields}


@pytest.fixture
def service(db) -> Service:
    key = ApiKey.objects.create(name="k", prefix="bp_x", key_hash="h" * 64, scopes=["registry:write"])
    return Service.objects.create(
        name="planner", type="PLANNING_SYSTEM", url="http://127.0.0.1:9001", health_url="http://127.0.0.1:9001/h",
        metadata={"version": "1.0.0", "nested": {"n": [1, 2.5, None, True]}}, capabilities=["plan"],
        endpoints=[{"method": "GET", "path": "/x"}], tags=["eu", "ü"], status=HealthStatus.PASSING,
        status_changed_at=timezone.now(), last_heartbeat_at=timezone.now() - dt.timedelta(seconds=3),
        check_timeout_seconds=2.5, slow_threshold_ms=None, ttl_seconds=30, owner=key, pending_approval=True,
    )


def test_a_row_read_by_id_or_identity_equals_the_orms(service):
    orm = _fields(Service.objects.get(pk=service.pk))
    by_pk = service_by_pk(service.pk)
    by_identity = service_by_identity(service.name, service.url)
    assert _fields(by_pk) == orm and _fields(by_identity) == orm
    assert by_pk.last_heartbeat_at.tzinfo is not None and by_pk._state.adding is False
    assert service_by_pk(service.pk + 1000) is None
    assert service_by_identity(service.name, "http://127.0.0.1:9002") is None


def test_the_heartbeat_update_sets_only_its_column(service):
    at = timezone.now()
    before = Service.objects.get(pk=service.pk)
    assert service_heartbeat_set(service.pk, at) is True
    after = Service.objects.get(pk=service.pk)
    assert after.last_heartbeat_at == at
    assert {k: v for k, v in _fields(after).items() if k != "last_heartbeat_at"} == \
        {k: v for k, v in _fields(before).items() if k != "last_heartbeat_at"}
    assert service_heartbeat_set(service.pk + 1000, at) is False


def _stat(query: str, arg) -> int:
    with connection.cursor() as cursor:
        cursor.execute(query, [arg])
        return cursor.fetchone()[0] or 0


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_heartbeat_fires_no_index_trigger_and_is_a_hot_update(service):
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL track_functions = 'pl'")
        cursor.execute("SELECT 'registry_service_index_keep'::regproc::oid")
        keep = cursor.fetchone()[0]
        cursor.execute("SELECT 'registry_service'::regclass::oid")
        table = cursor.fetchone()[0]
    calls = "SELECT pg_stat_get_xact_function_calls(%s)"
    hot = "SELECT pg_stat_get_xact_tuples_hot_updated(%s)"
    calls_before, hot_before = _stat(calls, keep), _stat(hot, table)
    service_heartbeat_set(service.pk, timezone.now())
    assert _stat(calls, keep) == calls_before  # the keep trigger is for index columns only
    assert _stat(hot, table) == hot_before + 1  # no index names last_heartbeat_at
    Service.objects.get(pk=service.pk).save()  # a full-row save still goes through it
    assert _stat(calls, keep) == calls_before + 1
