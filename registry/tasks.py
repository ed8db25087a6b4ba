"""Celery tasks of the registry: thin wrappers over registry.health, registry.outbox and registry.alerts."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from registry import alerts, health, health_expiry, health_loop, outbox

logger = logging.getLogger(__name__)


# Time limits below the sweep lock's TTL (HEALTH_SWEEP_LOCK_SECONDS): a sweep never outlives its lock.
_LIMITS = {"soft_time_limit": settings.HEALTH_TASK_SOFT_TIME_LIMIT, "time_limit": settings.HEALTH_TASK_TIME_LIMIT}


@shared_task(name="registry.health_sweep", ignore_result=True, **_LIMITS)
def health_sweep_task() -> dict:
    """Beat, every few seconds: probe the due services (one sweep at a time)."""
    for _ in range(settings.HEALTH_SWEEP_HELPERS):
        health_sweep_share_task.delay()
    report = health.health_sweep()
    return {"claimed": report.claimed, "changes": report.changes, "skipped": report.skipped_locked}


@shared_task(name="registry.health_sweep_share", ignore_result=True, expires=30, **_LIMITS)
def health_sweep_share_task() -> int:
    """Another worker's share of the running sweep: skip-locked claiming, no overlap."""
    return health_loop.health_sweep_run().claimed


@shared_task(name="registry.health_check_now", ignore_result=True, **_LIMITS)
def health_check_now_task(service_ids: list[int]) -> int:
    return health.health_check_now(service_ids=service_ids, keep_rows=False).probed


@shared_task(name="registry.health_prune", ignore_result=True, **_LIMITS)
def health_prune_task() -> int:
    """Hourly: drop snapshots past retention."""
    return health_expiry.health_snapshots_prune()


# The outbox (registry.outbox): alerts derived from transition rows, delivered from their rows.
# On OUTBOX_QUEUE (settings), not the health queue: a slow webhook must not hold up a sweep.


@shared_task(name="registry.outbox_process", ignore_result=True)
def outbox_process_task() -> int:
    """Enqueued after commit by whatever wrote transition rows: derive and queue their alerts."""
    return len(outbox.outbox_process())


@shared_task(name="registry.alert_deliver", ignore_result=True)
def alert_deliver_task(alert_id: int) -> bool:
    """One delivery round of one alert (a no-op unless this worker wins the row's claim)."""
    return alerts.alert_deliver(alert_id=alert_id)


@shared_task(name="registry.outbox_catch_up", ignore_result=True)
def outbox_catch_up_task() -> list[int]:
    """Beat: transitions a crash left unprocessed, alerts whose round failed or whose worker died."""
    return list(alerts.alerts_catch_up())
