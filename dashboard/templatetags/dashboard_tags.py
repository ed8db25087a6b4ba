"""Template tags that draw the dashboard and the service/run charts (inline SVG)."""

from __future__ import annotations

from django import template

from dashboard import queries

register = template.Library()


@register.inclusion_tag("admin/dashboard/_dashboard.html", takes_context=True)
def portal_dashboard(context):
    return {**queries.dashboard_data(), "perms": context.get("perms"),
            "csrf_token": context.get("csrf_token"), "request": context.get("request")}


@register.inclusion_tag("admin/registry/service/_charts.html")
def service_charts(service, with_latency: bool = True):
    if service is None or service.pk is None:
        return {"service": None}
    return {"service": service, "with_latency": with_latency,
            **queries.service_charts(service, with_latency=with_latency)}


@register.inclusion_tag("admin/workflows/workflowrun/_charts.html")
def run_charts(run):
    if run is None or run.pk is None:
        return {"run": None}
    return {"run": run, **queries.run_charts(run)}


@register.filter
def status_color(value: str) -> str:
    from berrys_portal.charts import color

    return color(str(value))
