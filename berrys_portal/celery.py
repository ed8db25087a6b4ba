"""The Celery application: configured from Django settings (CELERY_* names)."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import task_prerun, worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")

app = Celery("berrys_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def _drop_stale_db_connections(**kwargs) -> None:
    """Celery keeps DB connections across tasks (CELERY_DB_REUSE_MAX, a large saving per
    task); like Django between requests, drop one that is broken or older than CONN_MAX_AGE."""
    from django.db import close_old_connections

    close_old_connections()


# --- Prometheus multi-process mode (dashboard issue) ---------------------------------
# A pool process that exits releases its live files; its counters stay summed.
@worker_process_shutdown.connect
def _metrics_process_dead(pid=None, **kwargs) -> None:
    from berrys_portal.metrics import process_dead

    process_dead(pid or os.getpid())
