"""Create or update the beat schedule rows (django-celery-beat), idempotently.

Extend ``PERIODIC_TASKS`` with (name, task, every_seconds) to add a schedule;
operators can then see and edit the rows in the admin (a row an operator has
disabled stays disabled).
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask


def periodic_tasks() -> list[tuple[str, str, int]]:
    """(row name, Celery task name, every N seconds)."""
    return [
        ("registry: health sweep", "registry.health_sweep", settings.HEALTH_SWEEP_EVERY_SECONDS),
        ("registry: prune health snapshots", "registry.health_prune", 3600),
    ]


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
