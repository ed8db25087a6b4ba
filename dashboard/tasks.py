"""Celery tasks of the portal as a whole (found by the Celery app's autodiscovery)."""

from __future__ import annotations

from celery import shared_task

from dashboard.retention import retention_prune


@shared_task(name="portal.retention_prune", ignore_result=True)
def retention_prune_task() -> dict[str, int]:
    """Beat, hourly by default: delete rows past their retention, in small batches."""
    return retention_prune()
