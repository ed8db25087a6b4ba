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
from django.conf import settings
from django.contrib import admin, messages
from django.db import models
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from berrys_portal.formatting import PrettyJSONField
from dashboard.roles import OperateAdminMixin
from registry import services
from registry.admin_health import HealthAdminMixin, time_ago
from registry.auth import api_key_create, api_key_revoke
from registry.models import ApiKey, AuditEvent, HealthStatus, Service
from registry.scopes import ALIASES, DEPRECATED_NAMES, Scope, scopes_normalize
from registry.validators import validate_service_url

_BADGE_COLOURS = {
    HealthStatus.PASSING: "#1e7e34",
    HealthStatus.WARNING: "#b58100",
    HealthStatus.CRITICAL: "#c82333",
    HealthStatus.MAINTENANCE: "#5a6268",
    HealthStatus.UNKNOWN: "#6c757d",
}


def _http_url_formfield(field, **kwargs):
    """URL form fields assume http:// for a URL typed without a scheme (see formfield_overrides)."""
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "http")
    return field.formfield(**kwargs)


class ServiceAdminForm(forms.ModelForm):
    """Operators editing a URL get the API's rules too (no link-local, allow-list)."""

    class Meta:
        model = Service
        fields = ("name", "type", "url", "health_url")  # the admin passes the fieldsets' fields
        formfield_callback = _http_url_formfield

    def clean_url(self):
        return validate_service_url(self.cleaned_data["url"])

    def clean_health_url(self):
        value = self.cleaned_data.get("health_url") or ""
        return validate_service_url(value) if value else value


@admin.register(Service)
class ServiceAdmin(OperateAdminMixin, HealthAdminMixin, admin.ModelAdmin):
    form = ServiceAdminForm
    # metadata, capabilities, endpoints, tags: the API's JSON rule (depth, no NUL, no lone
    # surrogates), edited as indented JSON rather than one long line.
    formfield_overrides = {
        models.JSONField: {"form_class": PrettyJSONField},
        # Services are mostly plain-HTTP internal addresses: a URL typed without a scheme
        # keeps meaning http:// (and Django 6.0's change of default to https is moot).
        models.URLField: {"assume_scheme": "http"},
    }
    # The columns operators sort and scan by come first and stay narrow (relative times),
    # so the list fits 1366 px next to the filters; the URL, the widest, is last.
    list_display = (
        "name", "type_wrapped", "status_badge",
        *getattr(HealthAdminMixin, "health_list_display", ()),
        "criticality", "owner", "approval", "last_heartbeat", "url",
    )
    list_filter = ("type", "status", "criticality", "pending_approval")
    search_fields = ("name", "url")
    list_select_related = ("owner",)
    autocomplete_fields = ("owner",)
    ordering = ("type", "name")
    show_full_result_count = False
    list_per_page = 100
    actions = (
        "deregister", "maintenance_on", "maintenance_off", "approve",
        *getattr(HealthAdminMixin, "health_actions", ()),
    )
    readonly_fields = (
        "status", "status_reason", "status_changed_at", "registered_at", "updated_at",
        "last_heartbeat_at", "last_checked_at", "next_check_at", "consecutive_failures",
        "consecutive_successes", "critical_since", "last_latency_ms", "pending_approval",
        *getattr(HealthAdminMixin, "health_readonly_fields", ()),
    )
    fieldsets = (
        (None, {"fields": ("name", "type", "url", "health_url", "criticality")}),
        ("Identity", {
            "description": "The API key that manages this service. Changing it is recorded in the audit log.",
            "fields": ("owner", "pending_approval"),
        }),
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

    def save_model(self, request, obj, form, change):
        # Ownership moves only through service_owner_set (audited): save the rest first.
        owner_moved = "owner" in form.changed_data
        owner = obj.owner
        if owner_moved:
            obj.owner_id = form.initial.get("owner") if change else None
        super().save_model(request, obj, form, change)
        if owner_moved:
            services.service_owner_set(service=obj, owner=owner, actor=request.user.get_username())
            obj.owner = owner

    def delete_model(self, request, obj):
        # The admin's delete goes through the service so a "deregistered" StatusChange is kept.
        services.service_deregister(service=obj, actor=request.user.username, reason="admin delete")

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            services.service_deregister(service=obj, actor=request.user.username, reason="admin delete")

    @admin.display(description="heartbeat", ordering="last_heartbeat_at")
    def last_heartbeat(self, obj: Service) -> str:
        return time_ago(obj.last_heartbeat_at)

    @admin.display(description="type", ordering="type")
    def type_wrapped(self, obj: Service) -> str:
        # MODEL_ORCHESTRATION may break after its underscores: the column stays narrow.
        return format_html_join(mark_safe("_<wbr>"), "{}", ((part,) for part in obj.type.split("_")))

    @admin.display(description="approval", ordering="pending_approval")
    def approval(self, obj: Service) -> str:
        if not obj.pending_approval:
            return "—"
        return format_html('<span style="background:#b58100;color:#fff;padding:1px 6px;border-radius:8px">{}</span>',
                           "pending")

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

    @admin.action(description="Approve selected services (discoverable)", permissions=["change"])
    def approve(self, request, queryset):
        done = sum(services.service_approve(service=s, actor=request.user.get_username()) for s in queryset)
        self.message_user(request, f"Approved {done} service(s).", messages.SUCCESS)

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


def _csv_field(help_text: str) -> forms.CharField:
    return forms.CharField(required=False, help_text=help_text)


def _csv(value: str) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def mintable_scopes(user) -> list[str]:
    """The scopes ``user`` may put on a new key in the admin.

    Superusers: every scope. Other operators: API_KEY_ADMIN_MINTABLE_SCOPES, never registry:admin.
    """
    if getattr(user, "is_superuser", False):
        return list(Scope.values)
    return [scope for scope in Scope.values
            if scope in settings.API_KEY_ADMIN_MINTABLE_SCOPES and scope != Scope.REGISTRY_ADMIN]


class ApiKeyCreateForm(forms.ModelForm):
    """Creating a key: name, scopes, limits, optional expiry. The key itself is generated and shown once.

    Offers only the scopes this operator may mint (``mintable_scopes``), plus the old
    names as deprecated aliases; a forged POST with any other scope is refused.
    """

    scopes = forms.MultipleChoiceField(choices=(), widget=forms.CheckboxSelectMultiple)
    service_types = _csv_field("Comma-separated types it may register, e.g. PLANNING_SYSTEM. Empty: any.")
    name_patterns = _csv_field("Comma-separated globs its service names must match, e.g. planning-*. Empty: any.")
    gateway_allow = _csv_field("gateway scope: TYPE:METHOD entries, e.g. AGENT_ORCHESTRATOR:POST (* for any).")
    max_instances = forms.IntegerField(required=False, min_value=1, help_text="Empty: REGISTRY_KEY_MAX_INSTANCES.")
    max_hosts = forms.IntegerField(required=False, min_value=1, help_text="Empty: REGISTRY_KEY_MAX_HOSTS.")
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=3650, help_text="Empty: never expires."
    )

    class Meta:
        model = ApiKey
        fields = ("name",)

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.allowed = mintable_scopes(user)
        choices = [(value, label) for value, label in Scope.choices if value in self.allowed]
        choices += [(old, f"{old} (deprecated: {' + '.join(ALIASES[old])})") for old in sorted(DEPRECATED_NAMES)
                    if set(ALIASES[old]) <= set(self.allowed)]
        self.fields["scopes"].choices = choices

    def clean_scopes(self):
        try:
            scopes = scopes_normalize(self.cleaned_data["scopes"], where="admin")
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        refused = sorted(set(scopes) - set(self.allowed))
        if refused:
            raise forms.ValidationError(f"You may not mint: {', '.join(refused)}.")
        return scopes

    def clean_gateway_allow(self):
        return _csv(self.cleaned_data.get("gateway_allow", ""))

    def clean_service_types(self):
        return _csv(self.cleaned_data.get("service_types", ""))

    def clean_name_patterns(self):
        return _csv(self.cleaned_data.get("name_patterns", ""))


@admin.register(ApiKey)
class ApiKeyAdmin(OperateAdminMixin, admin.ModelAdmin):
    list_display = ("name", "prefix", "scope_list", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix")
    actions = ("revoke",)
    readonly_fields = ("name", "prefix", "scopes", "service_types", "name_patterns", "gateway_allow",
                       "max_instances", "max_hosts", "created_at", "created_by", "expires_at", "revoked_at",
                       "last_used_at")

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
            form = super().get_form(request, obj, change=change, **kwargs)

            class FormForUser(form):  # the scopes offered depend on who is asking
                def __init__(self, *args, **inner):
                    super().__init__(*args, user=request.user, **inner)

            return FormForUser
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "scopes", "service_types", "name_patterns", "gateway_allow", "max_instances",
                    "max_hosts", "expires_in_days")
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return  # keys are immutable: revoke and create a new one
        days = form.cleaned_data.get("expires_in_days")
        key, plain = api_key_create(
            name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"],
            expires_at=timezone.now() + timedelta(days=days) if days else None, created_by=request.user,
            service_types=form.cleaned_data["service_types"], name_patterns=form.cleaned_data["name_patterns"],
            gateway_allow=form.cleaned_data["gateway_allow"], max_instances=form.cleaned_data["max_instances"],
            max_hosts=form.cleaned_data["max_hosts"],
        )
        obj.pk = key.pk
        # Held on this request only, for response_add: the plain key never reaches a cookie,
        # the session, the messages framework or a log.
        request._new_api_key = (key, plain)

    def response_add(self, request, obj, post_url_continue=None):
        created = getattr(request, "_new_api_key", None)
        if created is None:
            return super().response_add(request, obj, post_url_continue)
        key, plain = created
        response = TemplateResponse(request, "admin/registry/apikey/created.html", {
            **self.admin_site.each_context(request),
            "opts": self.opts, "title": "New API key", "key": key, "plain_key": plain,
        })
        # The answer to the POST is the only place the key appears: no redirect, no caching.
        add_never_cache_headers(response)
        response["Cache-Control"] += ", no-store"
        return response

    def has_delete_permission(self, request, obj=None) -> bool:
        # Keys are revoked (audited), never deleted: a deleted key would leave no trace
        # and its runs no owner.
        return False

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        done = api_key_revoke(keys=queryset, actor=request.user.get_username())
        self.message_user(request, f"Revoked {done} key(s); they stop working at once.", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit trail, read-only: nobody adds, edits or deletes a row here."""

    list_display = ("at", "action", "actor", "target")
    list_filter = ("action",)
    search_fields = ("actor", "target")
    date_hierarchy = "at"
    show_full_result_count = False
    readonly_fields = ("at", "action", "actor", "target", "details")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


from registry import admin_adapters  # noqa: E402,F401  (registers the adapter rules admin)
