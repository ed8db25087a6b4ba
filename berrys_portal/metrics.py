"""Prometheus metrics for the portal, correct across gunicorn and Celery processes.

Two kinds of figures:

* **Events** (a probe's latency, a step's duration, a reconciler re-enqueue) are
  recorded where they happen, in whichever process that is, with the small
  functions below (``observe_probe``, ``observe_step``, ``record_run_finished``,
  ``record_requeue``). prometheus-client's multi-process mode writes them to
  memory-mapped files under ``PROMETHEUS_MULTIPROC_DIR``; the scrape sums the
  files of every process.
* **State** (each service's status, each breaker's state, how many runs are in
  each status) is read from PostgreSQL / the shared breaker store at scrape time
  by ``PortalStateCollector``. Any process can answer a scrape and every answer
  is the same, so no per-process gauge can go stale.

Process wiring (see README "Operator dashboard, metrics and roles"):
``PROMETHEUS_MULTIPROC_DIR`` defaults to ``var/prometheus`` (settings create it);
the process manager empties it before starting the processes
(``python manage.py metrics_reset``, or gunicorn's ``on_starting`` hook in
``berrys_portal/gunicorn_conf.py``); a gunicorn worker that exits is marked dead
by ``child_exit`` there, a Celery pool process by the signal handler in
``berrys_portal/celery.py``.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Probes and HTTP steps: 5 ms .. 30 s.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Steps include retries' waiting-free work only; human steps are not timed here.
_STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

HEALTH_CHECK_LATENCY = Histogram(
    "berrys_health_check_latency_seconds",
    "Latency of health probes, by service instance and type.",
    ["service", "type", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
STEP_DURATION = Histogram(
    "berrys_workflow_step_duration_seconds",
    "Duration of one workflow step attempt, by workflow, step and outcome.",
    ["workflow", "step", "outcome"],
    buckets=_STEP_BUCKETS,
)
RUNS_FINISHED = Counter(
    "berrys_workflow_runs_finished",
    "Workflow runs that reached a final status, by workflow and status.",
    ["workflow", "status"],
)
RECONCILER_REQUEUES = Counter(
    "berrys_reconciler_requeues",
    "Steps the reconciler re-enqueued because their message was lost, by reason.",
    ["reason"],
)


def observe_probe(*, service: str, service_type: str, latency_seconds: float, outcome: str) -> None:
    """One health probe finished (``outcome``: passing, warning, critical, error)."""
    HEALTH_CHECK_LATENCY.labels(service, service_type, outcome).observe(max(latency_seconds, 0.0))


def observe_step(*, workflow: str, step: str, duration_seconds: float, outcome: str) -> None:
    """One step attempt finished (``outcome``: succeeded, retry, failed, fallback, skipped)."""
    STEP_DURATION.labels(workflow, step, outcome).observe(max(duration_seconds, 0.0))


def record_run_finished(*, workflow: str, status: str) -> None:
    """A run reached succeeded, failed or cancelled."""
    RUNS_FINISHED.labels(workflow, status).inc()


def record_requeue(*, reason: str, count: int = 1) -> None:
    """The reconciler re-enqueued ``count`` steps (``reason``: lease_expired, overdue, ...)."""
    if count:
        RECONCILER_REQUEUES.labels(reason).inc(count)


# --- State, computed at scrape time ------------------------------------------------


def _breaker_states(ids: list[int]) -> dict[int, str]:
    """Live breaker state per service id: the shared breaker store when the health
    app provides one, else each service's latest BreakerEvent (closed if none)."""
    try:
        from registry.breakers import breaker_snapshots  # the health issue's shared store
    except ImportError:
        breaker_snapshots = None
    if breaker_snapshots is not None:
        try:
            return {sid: snap.state for sid, snap in breaker_snapshots(ids).items()}
        except Exception:  # noqa: BLE001 - a store outage must not break the scrape
            logger.warning("breaker store unavailable during scrape; using breaker events")
    return breaker_states_from_events(ids)


def breaker_states_from_events(ids: list[int]) -> dict[int, str]:
    """Each service's latest recorded breaker transition (services with none are absent)."""
    from django.db.models import OuterRef, Subquery

    from registry.models import BreakerEvent, Service

    # registry_breakerevent_latest (service, -at): each service's latest transition.
    latest = BreakerEvent.objects.filter(service_id=OuterRef("pk")).order_by("-at", "-id").values("new_state")[:1]
    rows = Service.objects.filter(pk__in=ids).annotate(state=Subquery(latest)).values_list("pk", "state")
    return {pk: state for pk, state in rows if state}


def service_states() -> list[dict]:
    """Every registered service with its status and live breaker state."""
    from registry.models import Service

    # Plain rows, not model instances: this runs on every scrape and dashboard view.
    services = list(Service.objects.order_by("type", "name").values("id", "name", "type", "status"))
    breakers = _breaker_states([s["id"] for s in services]) if services else {}
    for s in services:
        s["breaker"] = breakers.get(s["id"]) or "closed"
    return services


def run_counts() -> dict[tuple[str, str], int]:
    """(workflow, status) -> number of runs, or {} before the workflow tables exist."""
    from django.apps import apps
    from django.db.models import Count

    try:
        run_model = apps.get_model("workflows", "WorkflowRun")
    except LookupError:
        return {}
    rows = run_model.objects.order_by().values_list("workflow", "status").annotate(n=Count("pk"))
    return {(wf, st): n for wf, st, n in rows}


class PortalStateCollector(Collector):
    """Service status, breaker state and runs by status, read at scrape time."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from registry.models import BreakerState, HealthStatus

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

        from registry.health import health_oldest_overdue_seconds

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

        from workflows.readiness import STATES, readiness_all

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
    from django.db.models import Min
    from django.utils import timezone

    from workflows.models import STEP_CLAIMABLE, StepRun, StepStatus

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


# --- Multi-process plumbing ----------------------------------------------------------


def multiproc_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def metrics_reset() -> None:
    """Empty the multi-process directory. Only while no portal process is running."""
    path = multiproc_dir()
    if path is None:
        return
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def process_dead(pid: int) -> None:
    """A process exited: drop its live-gauge files (counters and histograms stay summed)."""
    if multiproc_dir() is not None:
        multiprocess.mark_process_dead(pid)


def metrics_render() -> bytes:
    """The text exposition: every process's events plus the state read now."""
    registry = CollectorRegistry(auto_describe=False)
    path = multiproc_dir()
    if path is not None:
        multiprocess.MultiProcessCollector(registry, path=str(path))
    else:  # single process (no directory configured): this process's own metrics
        for collector in (HEALTH_CHECK_LATENCY, STEP_DURATION, RUNS_FINISHED, RECONCILER_REQUEUES):
            registry.register(collector)
    registry.register(PortalStateCollector())
    return generate_latest(registry)
