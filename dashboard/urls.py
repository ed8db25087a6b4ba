"""Monitoring URLs: /metrics and /registry/prometheus-sd (with or without a trailing slash)."""

from django.urls import re_path

from dashboard import views

urlpatterns = [
    re_path(r"^metrics/?$", views.metrics_view, name="metrics"),
    re_path(r"^registry/prometheus-sd/?$", views.PrometheusSdView.as_view(), name="prometheus-sd"),
]
