"""Prometheus metrics for the portal, correct across gunicorn and Celery processes.

Two kinds of figures:

* **Events** (a probe's latency, a step's duration, a reconciler re-enqueue, a
  processed transition row, an alert delivery round) are recorded where they
  happen, in whichever process that is, with the small functions below
  (``observe_probe``, ``observe_step``, ``record_run_finished``, ``record_requeue``,
  ``record_transitions``, ``record_alert_round``). prometheus-client's multi-process mode writes them to
  memory-mapped files under ``PROMETHEUS_MULTIPROC_DIR``; the scrape sums the
  files of every process.
* **State** (each service's status, each breaker's state, how many runs are in
  each status) is read from PostgreSQL / the shared breaker store at scrape time
  by ``dashboard.metrics.PortalStateCollector``, which the dashboard's /metrics view
  passes to ``metrics_render``. Any process can answer a scrape and every answer
  is the same, so no per-process gauge can go stale. This module is the kernel's
  (every app records events through it), so it reads no app's models.

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

# Counted by the outbox task from the transition rows it claims (registry.outbox): once per row,
# whichever worker claims it, so the figure does not depend on which process made the change.
TRANSITIONS = Counter(
    "berrys_transitions_processed",
    "Status changes and breaker transitions processed by the outbox, by kind and new state.",
    ["kind", "to"],
)
ALERT_ROUNDS = Counter(
    "berrys_alert_delivery_rounds",
    "Alert delivery rounds, by alert kind and outcome (delivered, failed).",
    ["kind", "outcome"],
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


def record_transitions(*, kind: str, to: str, count: int = 1) -> None:
    """The outbox processed ``count`` transition rows (``kind``: status, breaker)."""
    if count:
        TRANSITIONS.labels(kind, to).inc(count)


def record_alert_round(*, kind: str, outcome: str) -> None:
    """One delivery round of one alert ended (``outcome``: delivered, failed)."""
    ALERT_ROUNDS.labels(kind, outcome).inc()


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


def metrics_render(*, collectors: Iterable[Collector] = ()) -> bytes:
    """The text exposition: every process's events plus ``collectors`` (state read now)."""
    registry = CollectorRegistry(auto_describe=False)
    path = multiproc_dir()
    if path is not None:
        multiprocess.MultiProcessCollector(registry, path=str(path))
    else:  # single process (no directory configured): this process's own metrics
        for collector in (HEALTH_CHECK_LATENCY, STEP_DURATION, RUNS_FINISHED, RECONCILER_REQUEUES):
            registry.register(collector)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)
