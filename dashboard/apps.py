"""The operator dashboard, metrics, Prometheus discovery and operator roles."""

from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Operator dashboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib import admin

        from dashboard import roles

        # The operators' console, not "Django administration".
        admin.site.site_header = "Berrys Portal"
        admin.site.site_title = "Berrys Portal"
        admin.site.index_title = "Berrys Portal — services and workflows"
        # The app list on the left costs ~300 px on every page: at 1366 px it pushed the
        # service list's breaker and last-checked columns out of view. The dashboard and
        # the breadcrumbs lead everywhere it did.
        admin.site.enable_nav_sidebar = False

        # After every migrate (apps' permissions exist by then): give Operators the
        # operate permissions and both groups read access to everything.
        post_migrate.connect(roles.groups_sync, dispatch_uid="dashboard.groups_sync")
