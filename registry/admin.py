"""Admin for services and API keys."""

from __future__ import annotations

from django.contrib import admin

from registry.admin_health import HealthAdminMixin
from registry.models import Service


@admin.register(Service)
class ServiceAdmin(HealthAdminMixin, admin.ModelAdmin):
    list_display = ("name", "type", "status", "url", "last_heartbeat_at", "criticality")

from registry import admin_adapters  # noqa: E402,F401  (registers the adapter rules admin)
