"""Admin for services and API keys.

Actions are one-liners over ``registry.services`` and need the "change"
permission (the Operators group has it, Viewers do not). ``HealthAdminMixin``
(registry/admin_health.py) may contribute ``health_actions``,
``health_list_display``, ``health_readonly_fields`` and ``health_fieldsets``;
they are merged in here.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.utils import timezone
from django.utils.html import format_html

from berrys_portal.formatting import PrettyJSONField
from dashboard.roles import OperateAdminMixin
from registry import services
from registry.admin_health import HealthAdminMixin, time_ago
from registry.auth import api_key_create, api_key_revoke
from registry.models import ApiKey, HealthStatus, Service
from registry.validators import validate_service_url

_BADGE_COLOURS = {
    HealthStatus.PASSING: "#1e7e34",
    HealthStatus.WARNING: "#b58100",
    HealthStatus.CRITICAL: "#c82333",
    HealthStatus.MAINTENANCE: "#5a6268",
    HealthStatus.UNKNOWN: "#6c757d",
}


class ServiceAdminForm(forms.ModelForm):
    """Operators editing a URL get the API's rules too (no link-local, allow-list)."""

    class Meta:
        model = Service
        fields = ("name", "type", "url", "health_url")  # the admin passes the fieldsets' fields

    def clean_url(self):
        return validate_service_url(self.cleaned_data["url"])

    def clean_health_url(self):
        value = self.cleaned_data.get("health_url") or ""
        return validate_service_url(value) if value else value


@admin.register(Service)
class ServiceAdmin(OperateAdminMixin, HealthAdminMixin, admin.ModelAdmin):
    form = ServiceAdminForm
    # metadata, capabilities, endpoints, tags: edited as indented JSON, not one long line.
    formfield_overrides = {models.JSONField: {"form_class": PrettyJSONField}}
    # The columns operators sort and scan by come first and stay narrow (relative times),
    # so the list fits 1366 px next to the filters; the URL, the widest, is last.
    list_display = (
        "name", "type", "status_badge",
        *getattr(HealthAdminMixin, "health_list_display", ()),
        "criticality", "last_heartbeat", "url",
    )
    list_filter = ("type", "status", "criticality")
    search_fields = ("name", "url")
    ordering = ("type", "name")
    show_full_result_count = False
    list_per_page = 100
    actions = (
        "deregister", "maintenance_on", "maintenance_off",
        *getattr(HealthAdminMixin, "health_actions", ()),
    )
    readonly_fields = (
        "status", "status_reason", "status_changed_at", "registered_at", "updated_at",
        "last_heartbeat_at", "last_checked_at", "next_check_at", "consecutive_failures",
        "consecutive_successes", "critical_since", "last_latency_ms",
        *getattr(HealthAdminMixin, "health_readonly_fields", ()),
    )
    fieldsets = (
        (None, {"fields": ("name", "type", "url", "health_url", "criticality")}),
        ("Description", {"fields": ("metadata", "capabilities", "endpoints", "tags")}),
        ("Health checks", {
            "classes": ("collapse",),
            "fields": ("check_interval_seconds", "check_timeout_seconds", "slow_threshold_ms",
                       "failures_before_critical", "successes_before_passing", "ttl_seconds",
                       "deregister_after_seconds", "last_checked_at", "next_check_at",
                       "consecutive_failures", "consecutive_successes", "critical_since",
                       "last_latency_ms"),
        }),
        ("Circuit breaker overrides", {
            "classes": ("collapse",),
            "description": "Empty: the preset of the service's criticality.",
            "fields": ("breaker_fail_max", "breaker_reset_timeout_seconds", "breaker_call_timeout_seconds"),
        }),
        *getattr(HealthAdminMixin, "health_fieldsets", ()),
    )

    def delete_model(self, request, obj):
        # The admin's delete goes through the service so a "deregistered" StatusChange is kept.
        services.service_deregister(service=obj, actor=request.user.username, reason="admin delete")

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            services.service_deregister(service=obj, actor=request.user.username, reason="admin delete")

    @admin.display(description="last heartbeat", ordering="last_heartbeat_at")
    def last_heartbeat(self, obj: Service) -> str:
        return time_ago(obj.last_heartbeat_at)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Service) -> str:
        colour = _BADGE_COLOURS.get(obj.status, "#6c757d")
        return format_html(
            '<span title="{}" style="background:{};color:#fff;padding:2px 8px;border-radius:8px;">{}</span>',
            obj.status_reason, colour, obj.get_status_display(),
        )

    @admin.action(description="Deregister selected services", permissions=["change"])
    def deregister(self, request, queryset):
        done = sum(services.service_deregister(service=s, actor=request.user.username, reason="admin")
                   for s in queryset)
        self.message_user(request, f"Deregistered {done} service(s).", messages.SUCCESS)

    @admin.action(description="Maintenance on (never discovered)", permissions=["change"])
    def maintenance_on(self, request, queryset):
        for s in queryset:
            services.service_set_maintenance(service=s, on=True, reason="admin", actor=request.user.username)
        self.message_user(request, f"{queryset.count()} service(s) in maintenance.", messages.SUCCESS)

    @admin.action(description="Maintenance off (check now)", permissions=["change"])
    def maintenance_off(self, request, queryset):
        for s in queryset:
            services.service_set_maintenance(service=s, on=False, reason="admin", actor=request.user.username)
        self.message_user(request, f"{queryset.count()} service(s) out of maintenance.", messages.SUCCESS)


class ApiKeyCreateForm(forms.ModelForm):
    """Creating a key: name, scopes, optional expiry. The key itself is generated and shown once."""

    scopes = forms.MultipleChoiceField(choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple)
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=3650, help_text="Empty: never expires."
    )

    class Meta:
        model = ApiKey
        fields = ("name",)


@admin.register(ApiKey)
class ApiKeyAdmin(OperateAdminMixin, admin.ModelAdmin):
    list_display = ("name", "prefix", "scope_list", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix")
    actions = ("revoke",)
    readonly_fields = ("name", "prefix", "scopes", "created_at", "created_by", "expires_at", "revoked_at",
                       "last_used_at")

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "scopes", "expires_in_days")
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return  # keys are immutable: revoke and create a new one
        days = form.cleaned_data.get("expires_in_days")
        key, plain = api_key_create(
            name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"],
            expires_at=timezone.now() + timedelta(days=days) if days else None, created_by=request.user,
        )
        obj.pk = key.pk  # so the admin's "added" message and redirect point at the new row
        self.message_user(
            request, f"API key for {key.name}: {plain} — copy it now, it is not shown again.",
            messages.WARNING,
        )

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        done = api_key_revoke(keys=queryset)
        self.message_user(request, f"Revoked {done} key(s); they stop working at once.", messages.SUCCESS)


from registry import admin_adapters  # noqa: E402,F401  (registers the adapter rules admin)
