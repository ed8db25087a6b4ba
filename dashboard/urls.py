"""Monitoring URLs: /metrics and /registry/prometheus-sd.

Like the registry's paths, each answers with and without a trailing slash (never a
redirect), and the schema lists the slash-less form only.
"""

from django.urls import re_path

from dashboard import views


def _both(pattern: str, view, name: str) -> list:
    return [re_path(rf"^{pattern}$", view, name=name), re_path(rf"^{pattern}/$", view)]


urlpatterns = [
    *_both(r"metrics", views.metrics_view, "metrics"),
    *_both(r"registry/prometheus-sd", views.PrometheusSdView.as_view(), "prometheus-sd"),
]
