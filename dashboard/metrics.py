"""The portal's state as Prometheus gauges, read at scrape time (the /metrics view).

Each service's status and breaker state, the most overdue health check, runs by status,
each workflow's readiness and the oldest running/queued step are read from PostgreSQL / the shared breaker store on every scrape, so any
process answers the same and no per-process gauge can go stale. The event metrics
(probe latency, step duration, ...) are the kernel's (``berrys_portal.metrics``); this
module lives in the dashboard because it reads the registry's and workflows' models.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db.models import Count, Min, OuterRef, Subquery
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from berrys_portal import metrics
from registry.breakers import breaker_snapshots
from registry.health_expiry import health_oldest_overdue_seconds
from registry.models import BreakerEvent, BreakerState, HealthStatus, Service
from workflows.models import STEP_CLAIMABLE, StepRun, StepStatus, WorkflowRun
from workflows.readiness import STATES, readiness_all

logger = logging.getLogger(__name__)


def _breaker_states(ids: list[int]) -> dict[int, str]:
    """Live breaker state per service id: the shared breaker store, or each service's
    latest BreakerEvent (closed if none) when the store is unavailable."""
    try:
        return {sid: snap.state for sid, snap in breaker_snapshots(ids).items()}
    except Exception:  # noqa: BLE001 - a store outage must not break the scrape
        logger.warning("breaker store unavailable during scrape; using breaker events")
    return breaker_states_from_events(ids)


def breaker_states_from_events(ids: list[int]) -> dict[int, str]:
    """Each service's latest recorded breaker transition (services with none are absent)."""
    # registry_breakerevent_latest (service, -at): each service's latest transition.
    latest = BreakerEvent.objects.filter(service_id=OuterRef("pk")).order_by("-at", "-id").values("new_state")[:1]
    rows = Service.objects.filter(pk__in=ids).annotate(state=Subquery(latest)).values_list("pk", "state")
    return {pk: state for pk, state in rows if state}


def service_states() -> list[dict]:
    """Every registered service with its status and live breaker state."""
    # Plain rows, not model instances: this runs on every scrape and dashboard view.
    services = list(Service.objects.order_by("type", "name").values("id", "name", "type", "status"))
    breakers = _breaker_states([s["id"] for s in services]) if services else {}
    for s in services:
        s["breaker"] = breakers.get(s["id"]) or "closed"
    return services


def run_counts() -> dict[tuple[str, str], int]:
    """(workflow, status) -> number of runs."""
    rows = WorkflowRun.objects.order_by().values_list("workflow", "status").annotate(n=Count("pk"))
    return {(wf, st): n for wf, st, n in rows}


class PortalStateCollector(Collector):
    """Service status, breaker state and runs by status, read at scrape time."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        status = GaugeMetricFamily(
            "berrys_service_status",
            "1 for the service's current health status, 0 for the others.",
            labels=["service", "type", "status"],
        )
        breaker = GaugeMetricFamily(
            "berrys_breaker_state",
            "1 for the service's current circuit-breaker state, 0 for the others.",
            labels=["service", "type", "state"],
        )
        for svc in service_states():
            for value in HealthStatus.values:
                status.add_metric([svc["name"], svc["type"], value], 1.0 if svc["status"] == value else 0.0)
            for value in BreakerState.values:
                breaker.add_metric([svc["name"], svc["type"], value], 1.0 if svc["breaker"] == value else 0.0)
        yield status
        yield breaker

        overdue = GaugeMetricFamily(
            "berrys_health_oldest_overdue_seconds",
            "How late the most overdue health check is (0: every check on time). A growing "
            "value means the sweep is not keeping up or is stuck.",
        )
        overdue.add_metric([], health_oldest_overdue_seconds())
        yield overdue

        runs = GaugeMetricFamily(
            "berrys_workflow_runs",
            "Workflow runs currently in each status, by workflow.",
            labels=["workflow", "status"],
        )
        for (workflow, run_status), n in sorted(run_counts().items()):
            runs.add_metric([workflow, run_status], float(n))
        yield runs

        readiness = GaugeMetricFamily(
            "berrys_workflow_readiness",
            "1 for the workflow's current readiness (ready; degraded: an optional service is down; "
            "blocked: a required one is), 0 for the others. See GET /workflows/readiness.",
            labels=["workflow", "state"],
        )
        for report in readiness_all():
            for state in STATES:
                readiness.add_metric([report["workflow"], state], 1.0 if report["status"] == state else 0.0)
        yield readiness

        yield from _step_age_gauges()


def _step_age_gauges():
    """How long the oldest running step has run, and how late the oldest queued step is: a
    stuck queue or a lost worker shows here before any run times out. Both read partial
    indexes over the few running / queued steps."""
    now = timezone.now()
    oldest_running = StepRun.objects.filter(status=StepStatus.RUNNING).aggregate(t=Min("started_at"))["t"]
    oldest_due = StepRun.objects.filter(status__in=STEP_CLAIMABLE, next_attempt_at__lte=now).aggregate(
        t=Min("next_attempt_at"))["t"]
    running = GaugeMetricFamily(
        "berrys_workflow_oldest_running_step_seconds",
        "Seconds since the longest-running step started (0: none running). Above the longest step "
        "timeout plus the lease means a worker is stuck or lost.",
    )
    running.add_metric([], (now - oldest_running).total_seconds() if oldest_running else 0.0)
    yield running
    queued = GaugeMetricFamily(
        "berrys_workflow_oldest_queued_step_seconds",
        "Seconds the most overdue queued/retrying step has waited since it was due (0: none). A growing "
        "value with idle workers means lost messages or no consumer on WORKFLOW_QUEUE.",
    )
    queued.add_metric([], (now - oldest_due).total_seconds() if oldest_due else 0.0)
    yield queued


def metrics_render() -> bytes:
    """The text exposition: every process's events plus the portal's state read now."""
    return metrics.metrics_render(collectors=[PortalStateCollector()])
