"""Empty the Prometheus multi-process directory; run before starting gunicorn and Celery."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from berrys_portal import metrics


class Command(BaseCommand):
    help = "Empty PROMETHEUS_MULTIPROC_DIR (only while no portal process is running)."

    def handle(self, *args, **options):
        metrics.metrics_reset()
        self.stdout.write(f"Emptied {metrics.multiproc_dir()}")
