"""The workflow engine's periodic tasks, installed as beat rows by ``setup_periodic_tasks``."""

from __future__ import annotations

from django.conf import settings


def periodic_tasks() -> list[tuple[str, str, int]]:
    """(row name, Celery task name, every N seconds), the shape ``setup_periodic_tasks`` uses."""
    return [
        ("workflows: reconcile lost steps and wait timeouts", "workflows.reconcile",
         settings.WORKFLOW_RECONCILE_EVERY_SECONDS),
    ]
