"""Operator actions the dashboard's buttons post to (under /admin/dashboard/)."""

from django.contrib import admin
from django.urls import path

from dashboard import admin_views

app_name = "dashboard"

urlpatterns = [
    path(
        "runs/<uuid:run_id>/retry/",
        admin.site.admin_view(admin_views.run_retry_view),
        name="run-retry",
    ),
]
