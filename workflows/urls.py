"""Workflow API URLs, mounted under /workflows/."""

urlpatterns: list = []
