"""Monitoring URLs: /metrics and /registry/prometheus-sd.

Like the registry's paths, each answers with and without a trailing slash (never a
redirect), and the schema lists the slash-less form only.
"""

from berrys_portal.routing import slash_optional
from dashboard import views

urlpatterns = [
    *slash_optional(r"metrics", views.metrics_view, "metrics"),
    *slash_optional(r"registry/prometheus-sd", views.PrometheusSdView.as_view(), "prometheus-sd"),
]
