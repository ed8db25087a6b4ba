"""The operator dashboard, metrics, Prometheus discovery and operator roles."""

from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Operator dashboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from dashboard import roles

        # After every migrate (apps' permissions exist by then): give Operators the
        # operate permissions and both groups read access to everything.
        post_migrate.connect(roles.groups_sync, dispatch_uid="dashboard.groups_sync")
