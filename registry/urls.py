"""Registry, discovery and portal-health URLs (with or without a trailing slash)."""

from django.urls import re_path  # noqa: F401

urlpatterns: list = []
