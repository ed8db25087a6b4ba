"""Celery tasks that span the apps (found by berrys_portal.celery's autodiscovery)."""

from __future__ import annotations

from celery import shared_task

from berrys_portal.retention import retention_prune


@shared_task(name="portal.retention_prune", ignore_result=True)
def retention_prune_task() -> dict[str, int]:
    """Beat, hourly by default: delete rows past their retention, in small batches."""
    return retention_prune()
