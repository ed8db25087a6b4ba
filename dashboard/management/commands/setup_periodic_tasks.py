"""Create or update the beat schedule rows (django-celery-beat), idempotently.

Each installed app lists its own schedules in ``<app>/schedules.py`` as ``periodic_tasks()``
returning (row name, Celery task name, every N seconds); this command imports none of them
by name: it asks every installed app for that module, so no app depends on another for its
schedule. Operators see and edit the rows in the admin; re-running keeps an operator's
enabled/disabled choice.
"""

from __future__ import annotations

from importlib import import_module

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils.module_loading import module_has_submodule
from django_celery_beat.models import IntervalSchedule, PeriodicTask


def periodic_tasks() -> list[tuple[str, str, int]]:
    """(row name, Celery task name, every N seconds) of every installed app, in app order."""
    rows: list[tuple[str, str, int]] = []
    for app_config in apps.get_app_configs():
        if module_has_submodule(app_config.module, "schedules"):
            rows += import_module(f"{app_config.name}.schedules").periodic_tasks()
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
