"""Create or update the beat schedule rows (django-celery-beat), idempotently.

Each app lists its schedules as (name, task, every_seconds); ``periodic_tasks``
collects them (the registry's below, the workflow engine's from
``workflows.schedules.PERIODIC_TASKS``). Operators see and edit the rows in the
admin; re-running keeps an operator's enabled/disabled choice.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from workflows.schedules import periodic_tasks as workflow_periodic_tasks


def periodic_tasks() -> list[tuple[str, str, int]]:
    """(row name, Celery task name, every N seconds)."""
    rows = [
        ("registry: health sweep", "registry.health_sweep", settings.HEALTH_SWEEP_EVERY_SECONDS),
        ("registry: prune health snapshots", "registry.health_prune", 3600),
        ("portal: prune rows past retention", "portal.retention_prune", settings.RETENTION_PRUNE_EVERY_SECONDS),
        *workflow_periodic_tasks(),
    ]
    try:
        from workflows.schedules import PERIODIC_TASKS
    except ImportError:  # the workflow app may not define schedules
        PERIODIC_TASKS = []
    rows += [(t["name"], t["task"], int(t["every_seconds"])) for t in PERIODIC_TASKS]
    return rows


class Command(BaseCommand):
    help = "Create or update the periodic task rows used by Celery beat (idempotent)."

    def handle(self, *args, **options):
        with transaction.atomic():
            for name, task, every in periodic_tasks():
                interval, _ = IntervalSchedule.objects.get_or_create(
                    every=every, period=IntervalSchedule.SECONDS
                )
                row, created = PeriodicTask.objects.get_or_create(
                    name=name, defaults={"task": task, "interval": interval}
                )
                if not created and (row.task != task or row.interval_id != interval.pk):
                    row.task, row.interval = task, interval
                    row.save(update_fields=["task", "interval"])
                verb = "created" if created else "kept"
                self.stdout.write(f"{verb}: {name} -> {task} every {every} s")
