"""Health and circuit-breaker parts of the Service admin (snapshots, uptime, charts, actions).

Mixed into ``ServiceAdmin`` (registry/admin.py), which merges ``health_actions``,
``health_list_display``, ``health_readonly_fields`` and ``health_fieldsets``.
The change page gets its panels from ``change_view``'s extra context, rendered
by templates/admin/registry/service/change_form.html.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from berrys_portal import charts
from berrys_portal.roles import can_operate_services
from registry import health, services
from registry.breakers import breaker_config, breaker_for, breaker_snapshots
from registry.models import Alert, BreakerEvent, HealthSnapshot, HealthStatus, Service, StatusChange
from registry.uptime import service_uptime

CHECK_NOW_LIMIT = 50


def time_ago(when: datetime | None) -> str:
    """A short relative time ("12 s ago") with the exact UTC time on hover: list columns stay narrow."""
    if when is None:
        return "never"
    seconds = (timezone.now() - when).total_seconds()
    if seconds < 0:
        text = "just now"
    elif seconds < 90:
        text = f"{seconds:.0f} s ago"
    elif seconds < 90 * 60:
        text = f"{seconds / 60:.0f} min ago"
    elif seconds < 36 * 3600:
        text = f"{seconds / 3600:.0f} h ago"
    else:
        text = f"{seconds / 86400:.0f} d ago"
    return format_html('<span title="{}" style="white-space:nowrap">{}</span>',
                       when.strftime("%Y-%m-%d %H:%M:%S UTC"), text)


class CriticalNowFilter(admin.SimpleListFilter):
    title = "critical now"
    parameter_name = "critical_now"

    def lookups(self, request, model_admin):
        return (("yes", "Critical now"),)

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(status=HealthStatus.CRITICAL)
        return queryset


class FlappingFilter(admin.SimpleListFilter):
    title = "flapping"
    parameter_name = "flapping"

    def lookups(self, request, model_admin):
        return (("yes", "3+ status changes in the last hour"),)

    def queryset(self, request, queryset):
        if self.value() != "yes":
            return queryset
        since = timezone.now() - timedelta(hours=1)
        flapping = (
            StatusChange.objects.filter(at__gte=since, service__isnull=False)
            .values("service").annotate(n=Count("id")).filter(n__gte=3).values("service")
        )
        return queryset.filter(pk__in=flapping)


class ForceOpenForm(forms.Form):
    reason = forms.CharField(max_length=300, help_text="Why the breaker is forced open (kept in its history).")


def latency_points(snapshots: list[HealthSnapshot]) -> list[tuple]:
    """The snapshots (newest first) as the latency chart's points, oldest first."""
    return [(s.checked_at, s.latency_ms, s.status) for s in reversed(snapshots) if s.latency_ms is not None]


def service_offers(service, breaker_state: str) -> dict[str, bool]:
    """Which of the service page's buttons apply to the service as it is now."""
    in_maintenance = service.status == HealthStatus.MAINTENANCE
    return {
        "check_now": not in_maintenance and not service.ttl_seconds,
        "breaker_reset": breaker_state != "closed",
        "breaker_force_open": breaker_state == "closed",
        "maintenance_on": not in_maintenance,
        "maintenance_off": in_maintenance,
    }


def _checked(report) -> str:
    """What a check run found, for an admin message: "name: status (reason), …"."""
    return ", ".join(f"{r.service.name}: {r.status}" + (f" ({r.reason})" if r.reason else "") for r in report.rows)


class HealthAdminMixin:
    """Health panels, breaker state, filters and actions for ServiceAdmin."""

    health_list_display = ("breaker_badge", "last_checked")
    health_actions = ("check_now", "reset_breaker", "force_open_breaker")
    health_readonly_fields = ()
    health_fieldsets = ()
    change_form_template = "admin/registry/service/change_form.html"

    def get_list_filter(self, request):
        return (*super().get_list_filter(request), CriticalNowFilter, FlappingFilter)

    @admin.display(description="last checked", ordering="last_checked_at")
    def last_checked(self, obj) -> str:
        return time_ago(obj.last_checked_at)

    @admin.display(description="breaker")
    def breaker_badge(self, obj) -> str:
        cache = getattr(self, "_breaker_cache", None)
        if cache is None or obj.pk not in cache:
            cache = self._breaker_cache = breaker_snapshots([obj.pk])
        state = cache[obj.pk].state
        return charts.status_word(state)

    def get_changelist_instance(self, request):
        # Live breaker states of the whole page in one Redis round trip.
        cl = super().get_changelist_instance(request)
        self._breaker_cache = breaker_snapshots([s.pk for s in cl.result_list])
        return cl

    # --- the service page's own buttons (the list's actions, for this one service) ---------

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:object_id>/operate/<str:what>/", wrap(self.operate_view), name="registry_service_operate"),
            *super().get_urls(),
        ]

    def operate_view(self, request, object_id: int, what: str):
        """POST only: check now, reset / force open the breaker, maintenance on / off."""
        service = get_object_or_404(Service, pk=object_id)
        back = HttpResponseRedirect(reverse("admin:registry_service_change", args=[service.pk]))
        if request.method != "POST":
            return back
        offers = service_offers(service, breaker_for(service).snapshot().state)
        maintenance = what in ("maintenance_on", "maintenance_off")
        allowed = self.has_change_permission(request, service) if maintenance else can_operate_services(request.user)
        if not allowed:
            raise PermissionDenied("Operators only.")
        if what not in offers:
            raise Http404(f"No action {what!r}.")
        if not offers[what]:
            self.message_user(request, f"{what.replace('_', ' ').capitalize()} does not apply now.", messages.WARNING)
            return back
        actor = request.user.get_username()
        if what == "check_now":
            report = health.health_check_now(service_ids=[service.pk])
            row = report.rows[0] if report.rows else None
            text = f"Checked: {row.status}" + (f" ({row.reason})" if row and row.reason else "") if row else "Checked."
            self.message_user(request, text, messages.SUCCESS)
        elif what == "breaker_reset":
            breaker_for(service).reset(actor=actor, reason="admin reset")
            self.message_user(request, "Circuit breaker closed.", messages.SUCCESS)
        elif what == "breaker_force_open":
            reason = (request.POST.get("reason") or "").strip()[:300]
            if not reason:
                self.message_user(request, "Say why the breaker is forced open.", messages.ERROR)
                return back
            breaker_for(service).force_open(reason=f"forced open by {actor}: {reason}", actor=actor)
            self.message_user(request, "Circuit breaker forced open.", messages.SUCCESS)
        else:
            services.service_set_maintenance(service=service, on=what == "maintenance_on", reason="admin",
                                             actor=actor)
            self.message_user(request, f"Maintenance {'on' if what == 'maintenance_on' else 'off'}.",
                              messages.SUCCESS)
        return back

    # --- change page panels -----------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        service = self.get_object(request, object_id)
        if service is not None:
            extra_context.update(self.health_panels(service))
            extra_context.setdefault("title", f"Service {service.name}")
            extra_context["can_operate_service"] = can_operate_services(request.user)
        return super().change_view(request, object_id, form_url, extra_context)

    def health_panels(self, service) -> dict:
        snapshots = list(HealthSnapshot.objects.filter(service=service).order_by("-checked_at")[:100])
        snap = breaker_for(service).snapshot()
        cfg = breaker_config(service)
        uptime = {}
        for label, days in (("24 h", 1), ("7 d", 7), ("30 d", 30)):
            value = service_uptime(service=service, window=timedelta(days=days))
            uptime[label] = "–" if value is None else f"{value * 100:.2f} %"
        return {
            "health_snapshots": snapshots[:10],
            "health_latency_count": sum(1 for s in snapshots if s.latency_ms is not None),
            "health_latency_svg": charts.latency_svg(latency_points(snapshots)),
            "status_badge": self.status_badge(service),
            "service_offer": service_offers(service, snap.state),
            "health_uptime": uptime,
            "health_changes": StatusChange.objects.filter(service=service).order_by("-at")[:30],
            "health_breaker": {
                "state": snap.state, "colour": charts.color(snap.state),
                "fail_counter": snap.fail_counter, "last_error": snap.last_error,
                "opened_at": (timezone.datetime.fromtimestamp(snap.opened_at, tz=timezone.get_current_timezone())
                              if snap.opened_at and snap.state != "closed" else None),
                "config": cfg,
            },
            "health_breaker_events": BreakerEvent.objects.filter(service=service).order_by("-at")[:20],
            "health_alerts": Alert.objects.filter(service=service).order_by("-created_at")[:10],
        }

    # --- actions ----------------------------------------------------------------------------------

    @admin.action(description="Check now (probe even through an open breaker)", permissions=["operate_service"])
    def check_now(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True)[:CHECK_NOW_LIMIT + 1])
        if len(ids) > CHECK_NOW_LIMIT:
            self.message_user(request, f"Select at most {CHECK_NOW_LIMIT} services to check at once.",
                              messages.ERROR)
            return
        report = health.health_check_now(service_ids=ids)
        self.message_user(request, f"Checked {report.probed} service(s). {_checked(report)}", messages.SUCCESS)

    @admin.action(description="Reset circuit breaker (close it)", permissions=["operate_service"])
    def reset_breaker(self, request, queryset):
        services_ = list(queryset)
        changed = sum(breaker_for(s).reset(actor=request.user.get_username(), reason="admin reset")
                      for s in services_)
        message = f"Closed {changed} breaker(s)."
        # A service the open breaker kept critical (its probes withheld) stays unusable until
        # its next probe; check those at once, so a run retried right after is served.
        critical = [s.pk for s in services_ if s.status == HealthStatus.CRITICAL][:CHECK_NOW_LIMIT]
        if critical:
            report = health.health_check_now(service_ids=critical)
            message += f" Checked the critical one(s) at once: {_checked(report)}."
        self.message_user(request, message, messages.SUCCESS)

    @admin.action(description="Force circuit breaker open…", permissions=["operate_service"])
    def force_open_breaker(self, request, queryset):
        form = ForceOpenForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            reason = form.cleaned_data["reason"]
            actor = request.user.get_username()
            changed = sum(breaker_for(s).force_open(reason=f"forced open by {actor}: {reason}", actor=actor)
                          for s in queryset)
            self.message_user(request, f"Forced {changed} breaker(s) open.", messages.SUCCESS)
            return None
        return TemplateResponse(request, "admin/registry/service/force_open.html", {
            **self.admin_site.each_context(request),
            "title": "Force circuit breakers open",
            "services": queryset,
            "form": form,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
        })


