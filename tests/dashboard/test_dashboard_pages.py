"""The admin index as a dashboard, the service page charts, and their query budgets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dashboard import queries
from registry.models import BreakerEvent, HealthSnapshot, HealthStatus, Service, StatusChange
from tests.dashboard.factories import failed_run

pytestmark = pytest.mark.django_db


def _svc(name, type_, status=HealthStatus.PASSING, **kw):
    return Service.objects.create(name=name, type=type_, url=f"http://127.0.0.1:1/{name}", status=status, **kw)


def test_the_dashboard_groups_services_by_type_and_lists_the_critical_ones(viewer_client):
    _svc("plan-1", "PLANNING_SYSTEM")
    _svc("plan-2", "PLANNING_SYSTEM", HealthStatus.WARNING)
    down = _svc("coord-1", "PROJECT_COORDINATOR", HealthStatus.CRITICAL)
    data = queries.dashboard_data()
    assert [(g["type"], g["healthy"], g["total"]) for g in data["groups"]] == [
        ("PLANNING_SYSTEM", 2, 2), ("PROJECT_COORDINATOR", 0, 1)
    ]
    assert [s["name"] for s in data["critical"]] == ["coord-1"]
    html = viewer_client.get("/admin/").content.decode()
    assert 'id="bp-dashboard"' in html
    assert "PLANNING_SYSTEM" in html and "plan-2" in html
    assert f"/admin/registry/service/{down.pk}/change/" in html


def test_breaker_trips_count_only_the_last_24_hours(viewer_client):
    svc = _svc("agents-1", "AGENT_ORCHESTRATOR", HealthStatus.CRITICAL)
    now = timezone.now()
    for hours in (1, 5, 30):
        BreakerEvent.objects.create(service=svc, service_name=svc.name, old_state="closed",
                                    new_state="open", at=now - timedelta(hours=hours), last_error="HTTP 503")
    BreakerEvent.objects.create(service=svc, service_name=svc.name, old_state="open",
                                new_state="half-open", at=now - timedelta(minutes=30))
    data = queries.dashboard_data(now=now)
    assert data["trip_count"] == 2
    assert [t["at"] for t in data["trips"]] == [now - timedelta(hours=1), now - timedelta(hours=5)]


def test_runs_by_status_are_charted_per_hour_and_failed_runs_listed_newest_first():
    older = failed_run(minutes_ago=90)
    newer = failed_run(minutes_ago=10)
    data = queries.dashboard_data()
    assert data["runs_total_24h"] == 2
    assert {i["status"]: i["count"] for i in data["runs_legend"]}["failed"] == 2
    assert len(data["runs_chart"]["rects"]) in (1, 2)  # one bar per hour that had runs
    assert all(r.fill == "#d13b3b" for r in data["runs_chart"]["rects"])
    assert [r.pk for r in data["failed_runs"]] == [newer.pk, older.pk]


def test_the_dashboard_costs_the_same_few_queries_with_more_rows(operator_client):
    _svc("a-1", "TOOL_INTEGRATION")
    failed_run()
    with CaptureQueriesContext(connection) as small:
        assert operator_client.get("/admin/").status_code == 200
    for i in range(15):
        _svc(f"b-{i}", f"TYPE_{i % 4}", HealthStatus.CRITICAL if i % 3 == 0 else HealthStatus.PASSING)
        failed_run(minutes_ago=i * 30)
    queries.runs_chart_cache_clear()  # compare cold with cold
    with CaptureQueriesContext(connection) as big:
        assert operator_client.get("/admin/").status_code == 200
    assert len(big) == len(small)
    assert len(big) <= 14  # 12, plus the workflow readiness panel's two (services, last deregistrations)


def test_uptime_is_computed_per_day_from_status_changes():
    now = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
    svc = _svc("up-1", "TOOL_INTEGRATION")
    Service.objects.filter(pk=svc.pk).update(registered_at=now - timedelta(days=40))
    svc.refresh_from_db()
    day = lambda d, h=0: datetime(2026, 3, d, h, tzinfo=UTC)  # noqa: E731
    for at, old, new in [(day(20), "unknown", "passing"), (day(25, 12), "passing", "critical"),
                         (day(26), "critical", "passing")]:
        StatusChange.objects.create(service=svc, service_name=svc.name, service_type=svc.type,
                                    old_status=old, new_status=new, at=at)
    days = {d["date"].day: d["uptime"] for d in queries.uptime_days(svc, now=now)}
    assert len(days) == 30
    assert days[19] is None  # status unknown all day
    assert days[20] == 100.0
    assert days[25] == pytest.approx(50.0)
    assert days[26] == 100.0 and days[31] == 100.0  # today so far


def test_the_service_page_shows_uptime_bars_and_a_latency_sparkline(viewer_client):
    svc = _svc("lat-1", "TOOL_INTEGRATION")
    now = timezone.now()
    HealthSnapshot.objects.bulk_create([
        HealthSnapshot(service=svc, checked_at=now - timedelta(seconds=15 * i), status="passing",
                       http_status=200, latency_ms=10.0 + i)
        for i in range(50)
    ])
    html = viewer_client.get(f"/admin/registry/service/{svc.pk}/change/").content.decode()
    assert 'id="bp-service-charts"' in html
    assert html.count('<rect x="') >= 30  # 30 uptime bars
    assert 'aria-label="Uptime per day"' in html
    assert 'id="latency-chart"' in html  # the health panel's latency chart follows
    charts = queries.service_charts(svc)
    assert charts["latency"]["last"] == 10.0
    assert charts["latency_points"] == 50
    assert len(charts["uptime"]["rects"]) == 30


def test_the_run_page_draws_the_definition_with_the_failed_step_highlighted_and_every_attempt(viewer_client):
    run = failed_run()
    html = viewer_client.get(f"/admin/workflows/workflowrun/{run.pk}/change/").content.decode()
    assert 'id="bp-run-charts"' in html
    assert html.count('class="bp-step') == 3
    assert '<g class="bp-step bp-highlight" data-status="failed">' in html
    assert html.count('class="bp-attempt"') == 5  # 1 + 1 + 3 attempts
    assert "5 attempts, 2 retries" in html
    charts = queries.run_charts(run)
    (row_wait,) = [r for r in charts["timeline"]["rows"] if r["waits"]]
    assert row_wait["name"] == "assign_agents" and len(row_wait["waits"]) == 2


def test_the_run_page_costs_a_bounded_number_of_queries(viewer_client):
    run = failed_run()
    with CaptureQueriesContext(connection) as ctx:
        assert viewer_client.get(f"/admin/workflows/workflowrun/{run.pk}/change/").status_code == 200
    assert len(ctx) <= 20


def test_closed_hours_of_the_runs_chart_are_cached_and_the_current_hour_is_live():
    now = timezone.now()
    failed_run(minutes_ago=120)
    with CaptureQueriesContext(connection) as cold:
        first = queries.dashboard_data(now=now)
    with CaptureQueriesContext(connection) as warm:
        queries.dashboard_data(now=now)
    assert len(warm) == len(cold) - 1  # the closed-hours query is skipped
    failed_run(minutes_ago=0)  # a new run in the current hour shows at once
    again = queries.dashboard_data(now=timezone.now())
    assert again["runs_total_24h"] == first["runs_total_24h"] + 1


def test_the_dashboard_shows_each_workflows_readiness(viewer_client):
    for name, type_ in (("ao", "AGENT_ORCHESTRATOR"), ("mo", "MODEL_ORCHESTRATION")):
        _svc(name, type_)
    _svc("tools", "TOOL_INTEGRATION", HealthStatus.CRITICAL)
    page = viewer_client.get("/admin/").content.decode()
    row = page.split('id="bp-readiness-agent_task_execution"')[1].split("</tr>")[0]
    assert ">degraded<" in row
    assert "without <b>TOOL_INTEGRATION</b>" in row and "discover_tools: skipped" in row
    row = page.split('id="bp-readiness-project_planning"')[1].split("</tr>")[0]
    assert ">blocked<" in row and "needs <b>PLANNING_SYSTEM</b>: no instance registered" in row


def test_a_workflows_run_list_says_whether_it_can_start(viewer_client):
    _svc("ao", "AGENT_ORCHESTRATOR")
    page = viewer_client.get("/admin/workflows/workflowrun/?workflow=agent_task_execution").content.decode()
    banner = page.split('id="bp-workflow-readiness"')[1].split("</div>\n</div>")[0]
    assert "<b>agent_task_execution</b> is <b>blocked</b>" in banner
    assert "Needs <b>MODEL_ORCHESTRATION</b>: no instance registered" in banner
    assert "Runs without <b>TOOL_INTEGRATION</b>" in banner
    assert 'id="bp-workflow-readiness"' not in viewer_client.get("/admin/workflows/workflowrun/").content.decode()
