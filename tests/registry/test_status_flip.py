"""Service.flip: the one rule for a service's status change (StatusChange written only on a change)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from registry import services
from registry.models import HealthStatus, Service, StatusChange, StatusFlip

pytestmark = pytest.mark.django_db


def _service(**kw) -> Service:
    return Service.objects.create(name=kw.pop("name", "flip-1"), type="PLANNING_SYSTEM",
                                  url="http://127.0.0.1:9/", **kw)


def test_a_flip_sets_the_status_and_records_one_change_with_its_actor():
    svc = _service()
    at = timezone.now()
    fields = svc.flip(HealthStatus.CRITICAL, reason="down", at=at, actor="olga")
    svc.save(update_fields=fields)

    svc.refresh_from_db()
    assert (svc.status, svc.status_reason, svc.status_changed_at) == ("critical", "down", at)
    change = StatusChange.objects.get(service=svc)
    assert (change.old_status, change.new_status, change.reason, change.actor, change.at) == (
        "unknown", "critical", "down", "olga", at)


def test_a_flip_to_the_same_status_records_nothing_and_keeps_the_change_time():
    svc = _service(status=HealthStatus.PASSING)
    before = timezone.now() - timedelta(hours=1)
    svc.status_changed_at = before
    svc.flip(HealthStatus.PASSING, reason="still fine", at=timezone.now())
    assert svc.status_changed_at == before and svc.status_reason == "still fine"
    assert not StatusChange.objects.exists()


@pytest.mark.both_dbs
def test_record_writes_only_real_changes_in_one_statement(django_assert_num_queries):
    at = timezone.now()
    flips = [StatusFlip(service_id=None, service_name=f"s{i}", service_type="T", old="unknown",
                        new="passing" if i % 2 else "unknown", reason="", at=at, actor="health-sweep")
             for i in range(6)]
    # PostgreSQL: one COPY, which runs beside Django's query log; SQLite: one bulk INSERT.
    with django_assert_num_queries(0 if connection.vendor == "postgresql" else 1):
        assert StatusChange.record(flips) == 3
    assert set(StatusChange.objects.values_list("actor", flat=True)) == {"health-sweep"}


@pytest.mark.both_dbs
def test_record_writes_every_field_as_the_model_would():
    svc = _service(name="flip-3")
    at = timezone.now()
    flips = [StatusFlip(service_id=svc.pk, service_name=svc.name, service_type=svc.type, old="unknown",
                        new="critical", reason="r" * 600, at=at, actor="a" * 300),
             StatusFlip(service_id=None, service_name="gone", service_type="T", old="passing",
                        new=StatusChange.DEREGISTERED, reason="", at=at - timedelta(seconds=1))]
    assert StatusChange.record(flips) == 2
    first, second = StatusChange.objects.order_by("-at")
    assert (first.service_id, first.service_name, first.service_type, first.old_status, first.new_status) == (
        svc.pk, "flip-3", "PLANNING_SYSTEM", "unknown", "critical")
    assert (first.reason, first.actor, first.at, first.processed) == ("r" * 500, "a" * 200, at, None)
    assert (second.service_id, second.service_name, second.actor, second.reason) == (None, "gone", "", "")
    assert second.at == at - timedelta(seconds=1)


def test_maintenance_and_deregistration_name_their_actor():
    svc = _service(name="flip-2")
    services.service_set_maintenance(service=svc, on=True, reason="upgrade", actor="apikey:ops")
    services.service_deregister(service=svc.pk, actor="olga", reason="retired")
    rows = list(StatusChange.objects.order_by("at", "id").values_list("new_status", "actor"))
    assert rows == [("maintenance", "apikey:ops"), (StatusChange.DEREGISTERED, "olga")]
