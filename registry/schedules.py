"""The registry's periodic tasks, installed as beat rows by ``setup_periodic_tasks``."""

from __future__ import annotations

from django.conf import settings


def periodic_tasks() -> list[tuple[str, str, int]]:
    """(row name, Celery task name, every N seconds)."""
    return [
        ("registry: health sweep", "registry.health_sweep", settings.HEALTH_SWEEP_EVERY_SECONDS),
        ("registry: prune health snapshots", "registry.health_prune", 3600),
        ("registry: outbox catch-up", "registry.outbox_catch_up", settings.OUTBOX_CATCH_UP_SECONDS),
    ]
