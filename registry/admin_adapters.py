"""Admin for request adapter rules: ordered per target, editable right in the list.

Switching rules on and off changes what every call to the target carries: like editing a
rule it needs the "change" permission (Viewers have only "view").
"""

from __future__ import annotations

from django.contrib import admin
from django.db import models

from berrys_portal.formatting import PrettyJSONField
from registry.models import RequestAdapterRule


@admin.register(RequestAdapterRule)
class RequestAdapterRuleAdmin(admin.ModelAdmin):
    list_display = (
        "service_type", "method", "endpoint_pattern", "order", "action", "field", "value", "enabled",
        "description",
    )
    list_display_links = ("service_type",)
    formfield_overrides = {models.JSONField: {"form_class": PrettyJSONField}}
    # Operators reorder and switch rules on and off without opening each one.
    list_editable = ("order", "enabled")
    list_filter = ("service_type", "action", "enabled", "method")
    search_fields = ("service_type", "endpoint_pattern", "field", "description")
    ordering = ("service_type", "order", "id")
    fieldsets = (
        ("Which calls", {"fields": ("service_type", "method", "endpoint_pattern", "pattern_type")}),
        ("What to do", {"fields": ("order", "action", "field", "value", "enabled", "description")}),
    )
    actions = ("enable_rules", "disable_rules")

    @admin.action(description="Enable selected rules", permissions=["change"])
    def enable_rules(self, request, queryset):
        # update() skips post_save: invalidate the rule cache here.
        from registry.adapters import adapter_cache_clear

        count = queryset.update(enabled=True)
        adapter_cache_clear()
        self.message_user(request, f"Enabled {count} rule(s).")

    @admin.action(description="Disable selected rules", permissions=["change"])
    def disable_rules(self, request, queryset):
        from registry.adapters import adapter_cache_clear

        count = queryset.update(enabled=False)
        adapter_cache_clear()
        self.message_user(request, f"Disabled {count} rule(s).")
