"""The portal-wide periodic tasks, installed as beat rows by ``setup_periodic_tasks``."""

from __future__ import annotations

from django.conf import settings


def periodic_tasks() -> list[tuple[str, str, int]]:
    """(row name, Celery task name, every N seconds)."""
    return [
        ("portal: prune rows past retention", "portal.retention_prune", settings.RETENTION_PRUNE_EVERY_SECONDS),
    ]
