"""The sweep's own health: how late the most overdue check is, as a metric and a dashboard warning."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from registry.health_expiry import health_oldest_overdue_seconds
from registry.models import Service
from tests.dashboard.test_metrics import scrape, value

pytestmark = pytest.mark.django_db


def _service(name: str, **fields) -> Service:
    return Service.objects.create(name=name, type="PLANNING_SYSTEM", url="http://127.0.0.1:9",
                                  health_url="http://127.0.0.1:9/h", **fields)


@pytest.mark.both_dbs  # one ORM query on both databases (SecondsAfter)
def test_the_oldest_overdue_check_is_measured_from_the_last_probe_and_the_interval():
    now = timezone.now()
    assert health_oldest_overdue_seconds(now=now) == 0.0
    _service("fresh", check_interval_seconds=5, last_checked_at=now)
    assert health_oldest_overdue_seconds(now=now) == 0.0
    _service("late", check_interval_seconds=5, last_checked_at=now - timedelta(seconds=305))
    _service("ttl", check_interval_seconds=5, last_checked_at=now - timedelta(days=1), ttl_seconds=30)
    assert health_oldest_overdue_seconds(now=now) == pytest.approx(300, abs=1)  # TTL services: not probed


def test_it_is_a_metric_and_the_dashboard_warns_beyond_the_threshold(read_client, viewer_client, settings):
    settings.HEALTH_OVERDUE_WARNING_SECONDS = 60
    _service("late", check_interval_seconds=5, last_checked_at=timezone.now() - timedelta(seconds=600))
    assert value(scrape(read_client), "berrys_health_oldest_overdue_seconds") >= 595
    html = viewer_client.get("/admin/").content.decode()
    assert "Health checks are falling behind" in html
