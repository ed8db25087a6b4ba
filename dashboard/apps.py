"""The operator dashboard, metrics and Prometheus discovery (roles: berrys_portal.roles)."""

from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Operator dashboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib import admin

        # The operators' console, not "Django administration".
        admin.site.site_header = "Berrys Portal"
        admin.site.site_title = "Berrys Portal"
        admin.site.index_title = "Berrys Portal — services and workflows"
        # The app list on the left costs ~300 px on every page: at 1366 px it pushed the
        # service list's breaker and last-checked columns out of view. The dashboard and
        # the breadcrumbs lead everywhere it did.
        admin.site.enable_nav_sidebar = False
