"""The Service admin's health parts: panels, uptime, latency chart, breaker state, filters, actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from berrys_portal.charts import latency_svg
from registry import health
from registry.admin_health import latency_points
from registry.breakers import breaker_for
from registry.models import BreakerEvent, HealthSnapshot, HealthStatus, Service, StatusChange
from registry.uptime import service_uptime
from tests.personas import logged_in, staff_user
from tests.registry.loopback import Reply

# Runs on PostgreSQL + Redis and on the embedded default (SQLite); see tests/conftest.py.
pytestmark = pytest.mark.both_dbs


@pytest.fixture
def operator(clean_state) -> Client:
    return logged_in(staff_user("olga", "Operators"))


@pytest.fixture
def viewer(clean_state) -> Client:
    return logged_in(staff_user("victor", "Viewers"))


def _action(client, action, objs, **extra):
    return client.post("/admin/registry/service/",
                       {"action": action, "_selected_action": [o.pk for o in objs], **extra}, follow=True)


def test_uptime_is_computed_from_status_changes(make_service):
    now = timezone.now()
    svc = make_service()
    svc.registered_at = now - timedelta(days=40)
    for hours_ago, old, new in [(30, "unknown", "passing"), (6, "passing", "critical"), (3, "critical", "passing")]:
        StatusChange.objects.create(service=svc, service_name=svc.name, service_type=svc.type,
                                    old_status=old, new_status=new, at=now - timedelta(hours=hours_ago))
    # Last 24 h: up 18 h + 3 h, down 3 h.
    assert service_uptime(service=svc, window=timedelta(days=1), now=now) == pytest.approx(21 / 24)
    # Last 7 d: unknown before the first change counts neither way: 27 h up of 30.
    assert service_uptime(service=svc, window=timedelta(days=7), now=now) == pytest.approx(27 / 30)


def test_the_latency_chart_is_an_inline_svg_with_failed_probes_marked():
    now = timezone.now()
    snaps = [HealthSnapshot(checked_at=now - timedelta(seconds=i), latency_ms=10.0 + i,
                            status="critical" if i == 2 else "passing") for i in range(5)]
    svg = latency_svg(latency_points(snaps))
    assert svg.startswith("<svg") and "<polyline" in svg and svg.count("<circle") == 1
    assert latency_svg(latency_points(snaps[:1])) == ""


def test_the_service_page_shows_health_and_breaker_panels(operator, loopback, make_service):
    server = loopback({"/health": Reply(200, {"status": "healthy", "database": True})})
    svc = make_service(url=server.url, name="planner-9")
    for _ in range(3):
        health.health_check_now(service_ids=[svc.pk])
    breaker_for(svc).force_open(reason="testing the panel")

    html = operator.get(f"/admin/registry/service/{svc.pk}/change/").content.decode()
    for marker in ("health-panels", "breaker-panel", "snapshots-panel", "status-changes-panel",
                   "<svg", "Uptime", "24 h", "7 d", "30 d", "testing the panel"):
        assert marker in html, marker
    assert 'color:#d13b3b">open</strong>' in html  # the live state


def test_the_list_shows_live_breaker_state_and_filters_critical_and_flapping(operator, make_service):
    calm = make_service(name="calm", status=HealthStatus.PASSING)
    down = make_service(name="down", status=HealthStatus.CRITICAL)
    flappy = make_service(name="flappy", status=HealthStatus.PASSING)
    now = timezone.now()
    for i, (old, new) in enumerate([("passing", "critical"), ("critical", "passing"), ("passing", "critical"),
                                    ("critical", "passing")]):
        StatusChange.objects.create(service=flappy, service_name="flappy", service_type=flappy.type,
                                    old_status=old, new_status=new, at=now - timedelta(minutes=50 - i))
    StatusChange.objects.create(service=calm, service_name="calm", service_type=calm.type,
                                old_status="unknown", new_status="passing", at=now - timedelta(hours=3))
    breaker_for(down).force_open(reason="x")

    html = operator.get("/admin/registry/service/").content.decode()
    assert "column-breaker_badge" in html and ">open</span>" in html and ">closed</span>" in html

    html = operator.get("/admin/registry/service/?critical_now=yes").content.decode()
    assert ">down<" in html and ">calm<" not in html and ">flappy<" not in html
    html = operator.get("/admin/registry/service/?flapping=yes").content.decode()
    assert ">flappy<" in html and ">calm<" not in html and ">down<" not in html


def test_check_now_probes_the_selected_services_through_an_open_breaker(operator, loopback, make_service):
    server = loopback({"/health": Reply(200, {"status": "healthy"})})
    svc = make_service(url=server.url, name="p1", next_check_at=timezone.now() + timedelta(hours=1))
    breaker_for(svc).force_open(reason="x")

    response = _action(operator, "check_now", [svc])
    assert "Checked 1 service(s). p1: passing" in response.content.decode()
    assert server.count("/health") == 1 and breaker_for(svc).snapshot().state == "closed"


def test_operators_reset_and_force_open_breakers_with_a_reason(operator, make_service):
    svc = make_service(name="p1")
    page = _action(operator, "force_open_breaker", [svc]).content.decode()
    assert "reason" in page and breaker_for(svc).snapshot().state == "closed"  # asks first

    _action(operator, "force_open_breaker", [svc], apply="1", reason="deploy in progress")
    assert breaker_for(svc).snapshot().state == "open"
    event = BreakerEvent.objects.get(service=svc, new_state="open")
    assert event.actor == "olga" and "deploy in progress" in event.last_error

    response = _action(operator, "reset_breaker", [svc])
    assert "Closed 1 breaker(s)." in response.content.decode()
    assert breaker_for(svc).snapshot().state == "closed"
    assert BreakerEvent.objects.get(service=svc, new_state="closed").actor == "olga"


def test_viewers_cannot_reset_breakers_and_anonymous_users_must_log_in(viewer, make_service):
    svc = make_service()
    breaker_for(svc).force_open(reason="x")
    html = viewer.get("/admin/registry/service/").content.decode()
    assert "reset_breaker" not in html
    viewer.post("/admin/registry/service/", {"action": "reset_breaker", "_selected_action": [svc.pk]})
    assert breaker_for(svc).snapshot().state == "open"
    assert Client().get(f"/admin/registry/service/{svc.pk}/change/").status_code == 302


def test_the_admin_figures_and_the_daily_bars_are_one_computation(make_service):
    # A service whose status has held since registration (no recorded change): both the
    # admin's figure and the dashboard's bars count it (the admin's used to say "–").
    from registry.uptime import service_uptime_days

    now = timezone.now()
    svc = make_service(status="passing")
    svc.registered_at = now - timedelta(days=3)
    assert service_uptime(service=svc, window=timedelta(days=1), now=now) == 1.0
    days = service_uptime_days(service=svc, days=5, now=now)
    assert [d["uptime"] for d in days][-3:] == [100.0, 100.0, 100.0] and days[0]["uptime"] is None


def test_resetting_a_breaker_checks_a_service_it_kept_critical_at_once(operator, make_service, loopback):
    """An open breaker withholds probes and keeps its service critical; after the reset the
    service is probed at once, so a workflow retried right after finds it eligible."""
    server = loopback({"/health": Reply(200, {"status": "healthy"})})
    svc = make_service(name="m1", url=server.url, status=HealthStatus.PASSING)
    breaker_for(svc).force_open(reason="tripped by workflow calls")
    Service.objects.filter(pk=svc.pk).update(status=HealthStatus.CRITICAL, status_reason="breaker open")
    before = server.count("/health")

    response = _action(operator, "reset_breaker", [svc]).content.decode()

    assert "Closed 1 breaker(s)." in response and "m1: passing" in response
    assert server.count("/health") == before + 1
    svc.refresh_from_db()
    assert svc.status == HealthStatus.PASSING and breaker_for(svc).snapshot().state == "closed"
