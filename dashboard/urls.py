"""Monitoring URLs: /metrics and /registry/prometheus-sd (with or without a trailing slash)."""

from django.urls import re_path

from dashboard import views
from registry.urls import _both

urlpatterns = [
    re_path(r"^metrics/?$", views.metrics_view, name="metrics"),  # plain Django view: not in the schema
    *_both(r"registry/prometheus-sd", views.PrometheusSdView.as_view(), "prometheus-sd"),
]
