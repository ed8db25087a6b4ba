"""Workflow API URLs, mounted under /workflows/ (each with or without a trailing slash)."""

from django.urls import re_path

from workflows import views

HEX = "[0-9a-fA-F]"
# A UUID in its canonical 8-4-4-4-12 form: anything else is a 404 from the URL resolver.
RUN = rf"^runs/(?P<run_id>{HEX}{{8}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{12}})"

urlpatterns = [
    re_path(r"^runs/?$", views.RunListView.as_view(), name="workflow-runs"),
    re_path(RUN + r"/?$", views.RunDetailView.as_view(), name="workflow-run"),
    re_path(RUN + r"/retry/?$", views.RunRetryView.as_view(), name="workflow-run-retry"),
    re_path(RUN + r"/cancel/?$", views.RunCancelView.as_view(), name="workflow-run-cancel"),
    re_path(RUN + r"/signal/?$", views.RunSignalView.as_view(), name="workflow-run-signal"),
    re_path(r"^definitions/?$", views.DefinitionListView.as_view(), name="workflow-definitions"),
    re_path(r"^readiness/?$", views.ReadinessView.as_view(), name="workflow-readiness"),
]
