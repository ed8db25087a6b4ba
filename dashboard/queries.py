"""Read-only queries behind the admin dashboard, the service page charts and the run page charts.

Each page costs a small, fixed number of queries whatever the table sizes: every
query is bounded by an index (named in the comment) and a LIMIT or a time window;
nothing counts a whole big table.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.db.models import Count
from django.db.models.functions import TruncHour
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html_join

from berrys_portal import charts
from dashboard.metrics import service_states
from registry.health_expiry import health_oldest_overdue_seconds
from registry.models import (
    BreakerEvent,
    BreakerState,
    HealthSnapshot,
    HealthStatus,
    Service,
)
from registry.uptime import UP_STATUSES, service_uptime_days

RUN_STATUSES = ["succeeded", "failed", "cancelled", "running", "waiting", "pending"]
RUNS_CHART_CACHE_SECONDS = 60


def cache_get(key: str):
    try:
        return cache.get(key)
    except Exception:  # noqa: BLE001 - the dashboard works without its cache
        return None


def cache_set(key: str, value, timeout: int) -> None:
    try:
        cache.set(key, value, timeout)
    except Exception:  # noqa: BLE001
        pass


def _run_model():
    try:
        return apps.get_model("workflows", "WorkflowRun")
    except LookupError:  # the workflow tables are not there yet
        return None


def run_admin_url(pk) -> str | None:
    """The run's admin page, if the workflows admin is installed."""
    try:
        return reverse("admin:workflows_workflowrun_change", args=[pk])
    except NoReverseMatch:
        return None


# --- Admin index -----------------------------------------------------------------


def dashboard_data(*, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    since = now - timedelta(hours=24)

    states = service_states()  # 1 query (+ the breaker store)
    # One reverse() for all services: hundreds of {% url %} calls would dominate the page.
    url_pattern = reverse("admin:registry_service_change", args=[0]).replace("/0/", "/{}/")
    by_type: dict[str, list[dict]] = defaultdict(list)
    for svc in states:
        svc["color"] = charts.color(svc["status"])
        svc["breaker_color"] = charts.color(svc["breaker"])
        svc["url"] = url_pattern.format(svc["id"])
        by_type[svc["type"]].append(svc)
    groups = [
        {
            "type": t,
            "chips": service_chips(svcs),
            "healthy": sum(s["status"] in UP_STATUSES for s in svcs),
            "total": len(svcs),
        }
        for t, svcs in sorted(by_type.items())
    ]
    critical = [s for s in states if s["status"] == HealthStatus.CRITICAL]
    open_breakers = [s for s in states if s["breaker"] != BreakerState.CLOSED]

    # registry_breakerevent_trips (new_state, -at): trips in the last 24 h.
    trips = list(
        BreakerEvent.objects.filter(new_state=BreakerState.OPEN, at__gte=since)
        .order_by("-at")
        .values("service_id", "service_name", "at", "last_error", "actor")[:20]
    )
    trip_count = BreakerEvent.objects.filter(new_state=BreakerState.OPEN, at__gte=since).count()

    runs = _runs_panel(now=now)
    overdue = health_oldest_overdue_seconds(now=now)
    from workflows.readiness import readiness_all

    readiness = readiness_all()  # 2 queries (+ the breaker store)
    readiness_colors = {"ready": charts.color("passing"), "degraded": charts.color("warning"),
                        "blocked": charts.color("critical")}
    for report in readiness:
        report["color"] = readiness_colors[report["status"]]
        report["down"] = [r for r in report["required"] + report["optional"] if not r["available"]]
    return {
        "readiness": readiness,
        "health_overdue_seconds": overdue,
        "health_overdue_warning": overdue > settings.HEALTH_OVERDUE_WARNING_SECONDS,
        "now": now,
        "groups": groups,
        "service_total": len(states),
        "critical": critical,
        "open_breakers": open_breakers,
        "trips": trips,
        "trip_count": trip_count,
        **runs,
    }


def service_chips(services: list[dict]) -> str:
    """The status-dot chips of one service type, built in Python (a loop of small
    template tags costs ~1 ms per service; this costs microseconds)."""
    return format_html_join(
        "\n", (
            '<a class="bp-svc" href="{}" title="{}: {}, breaker {}">'
            '<svg width="16" height="16" viewBox="0 0 16 16" aria-hidden="true">'
            '<circle cx="8" cy="8" r="7" fill="none" stroke="{}" stroke-width="2"/>'
            '<circle cx="8" cy="8" r="4" fill="{}"/></svg> {} <span class="bp-empty">{}{}</span></a>'
        ),
        (
            (s["url"], s["name"], s["status"], s["breaker"], s["breaker_color"], s["color"], s["name"],
             s["status"], "" if s["breaker"] == "closed" else f", breaker {s['breaker']}")
            for s in services
        ),
    )


def _runs_by_hour(run_model, *, start: datetime, end: datetime | None) -> dict[tuple[datetime, str], int]:
    # workflows_run_status (status, -created_at): naming every status turns this into an
    # index-only scan of that index (no heap visits), ~2.5x faster than the created_at one.
    all_statuses = [value for value, _ in run_model._meta.get_field("status").choices]
    qs = run_model.objects.filter(status__in=all_statuses, created_at__gte=start)
    if end is not None:
        qs = qs.filter(created_at__lt=end)
    rows = qs.annotate(hour=TruncHour("created_at")).order_by().values_list("hour", "status").annotate(n=Count("pk"))
    return {(hour, status): n for hour, status, n in rows}


def _runs_chart_key(first: datetime) -> str:
    return f"dashboard:runs-by-hour:{first:%Y%m%d%H}"


def runs_chart_cache_clear(*, now: datetime | None = None) -> None:
    """Forget the cached closed hours (tests; after bulk changes to old runs)."""
    now = now or timezone.now()
    current = now.replace(minute=0, second=0, microsecond=0)
    for back in (0, 1):  # also the previous window, in case the hour just turned
        try:
            cache.delete(_runs_chart_key(current - timedelta(hours=23 + back)))
        except Exception:  # noqa: BLE001
            pass


def _runs_panel(*, now: datetime) -> dict:
    run_model = _run_model()
    if run_model is None:
        return {"runs_available": False}
    current = now.replace(minute=0, second=0, microsecond=0)
    first = current - timedelta(hours=23)
    # The 23 closed hours are cached for RUNS_CHART_CACHE_SECONDS (their runs change
    # status only while still running); the current hour is always read live.
    key = _runs_chart_key(first)
    closed = cache_get(key)
    if closed is None:
        closed = _runs_by_hour(run_model, start=first, end=current)
        cache_set(key, closed, RUNS_CHART_CACHE_SECONDS)
    live = _runs_by_hour(run_model, start=current, end=None)
    counts: dict[datetime, dict[str, int]] = defaultdict(dict)
    totals: dict[str, int] = defaultdict(int)
    for (hour, status), n in (*closed.items(), *live.items()):
        counts[hour][status] = n
        totals[status] += n
    buckets = [first + timedelta(hours=i) for i in range(24)]
    chart = charts.stacked_bars(buckets, counts, RUN_STATUSES, width=1200, height=150)
    legend = [{"status": s, "color": charts.color(s), "count": totals.get(s, 0)} for s in RUN_STATUSES]

    # workflows_run_failed_recent (partial, status=failed, -finished_at): the latest failures.
    failed = list(
        run_model.objects.filter(status="failed")
        .order_by("-finished_at")
        .only("id", "workflow", "version", "error", "failed_step", "finished_at", "created_at")
        [: settings.DASHBOARD_FAILED_RUNS_SHOWN]
    )
    for run in failed:
        run.admin_url = run_admin_url(run.pk)
    return {
        "runs_available": True,
        "runs_chart": chart,
        "runs_legend": legend,
        "runs_total_24h": sum(totals.values()),
        "failed_runs": failed,
    }


# --- Service page ------------------------------------------------------------------


def uptime_days(service: Service, *, now: datetime | None = None, days: int = 30) -> list[dict]:
    """Per UTC day, the share of time the service was up, in percent (registry.uptime)."""
    return service_uptime_days(service=service, days=days, now=now)


def service_charts(service: Service, *, now: datetime | None = None, points: int = 120,
                   with_latency: bool = True) -> dict:
    days = uptime_days(service, now=now)
    known = [d["uptime"] for d in days if d["uptime"] is not None]
    latencies: list[float] = []
    if with_latency:
        # registry_snapshot_latest (service, -checked_at): the latest probes' latency.
        latencies = list(
            HealthSnapshot.objects.filter(service=service, latency_ms__isnull=False)
            .order_by("-checked_at")
            .values_list("latency_ms", flat=True)[:points]
        )
        latencies.reverse()
    return {
        "uptime": charts.uptime_bars(days),
        "uptime_avg": (sum(known) / len(known)) if known else None,
        "first_day": days[0]["date"],
        "latency": charts.sparkline([float(v) for v in latencies]),
        "latency_points": len(latencies),
    }


# --- Run page ----------------------------------------------------------------------

ACTIVE_STEP = {"queued", "running", "retrying", "waiting"}


def run_charts(run, *, now: datetime | None = None) -> dict:
    """Timeline of the run's steps and attempts, and its definition diagram (2 queries)."""
    now = now or timezone.now()
    step_rows = list(run.steps.order_by("index").values(
        "id", "index", "name", "kind", "service_type", "required", "status", "started_at",
        "finished_at", "attempt_count",
    ))
    attempt_model = apps.get_model("workflows", "StepAttempt")
    # workflows_attempt_step (step, number): every attempt of the run's steps.
    attempts = defaultdict(list)
    for att in attempt_model.objects.filter(step__run_id=run.pk).order_by("step_id", "number").values(
        "step_id", "number", "outcome", "started_at", "finished_at", "response_status", "error",
    ):
        attempts[att["step_id"]].append(att)
    for step in step_rows:
        step["attempts"] = attempts.get(step["id"], [])

    times = [t for s in step_rows for t in (s["started_at"], s["finished_at"]) if t]
    # A try still in flight ("sent") has no finished_at yet.
    times += [t for s in step_rows for a in s["attempts"] for t in (a["started_at"], a["finished_at"]) if t]
    start = run.started_at or run.created_at
    if times:
        start = min([start, *times])
    end = run.finished_at or now
    if times:
        end = max([end, *times])
    if end <= start:
        end = start + timedelta(seconds=1)

    highlight = None
    for step in step_rows:
        if step["status"] == "failed" or step["status"] in ACTIVE_STEP:
            highlight = step["index"]
            break
    if highlight is None and getattr(run, "failed_step", ""):
        highlight = next((s["index"] for s in step_rows if s["name"] == run.failed_step), None)
    return {
        "timeline": charts.timeline(step_rows, start, end),
        "diagram": charts.flow_diagram(step_rows, highlight),
        "retries": sum(max(len(s["attempts"]) - 1, 0) for s in step_rows),
        "attempts": sum(len(s["attempts"]) for s in step_rows),
    }
