"""Every admin action, forged by a Viewer, is refused with 403 and changes nothing.

The (model, action) pairs come from the admin site's registry and each ModelAdmin's actions
as a superuser sees them, so an admin or action added later is covered without editing this file.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from dashboard.roles import VIEWERS
from registry.auth import api_key_create
from registry.models import RequestAdapterRule, Service
from tests.dashboard.factories import failed_run
from tests.personas import logged_in, staff_user

pytestmark = pytest.mark.both_dbs


def _one_row_of_each() -> None:
    """A row for every model the admin shows today (other models fall back to any row they have)."""
    get_user_model().objects.create_user(username="someone", password="pw-someone-123")
    Group.objects.get_or_create(name="Spare")
    every = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="a task", task="registry.health_sweep", interval=every, enabled=True)
    ClockedSchedule.objects.create(clocked_time=timezone.now() + timedelta(days=1))
    CrontabSchedule.objects.create(minute="5")
    SolarSchedule.objects.create(event="sunrise", latitude=52, longitude=4)
    Service.objects.create(name="planner", type="PLANNING_SYSTEM", url="http://127.0.0.1:9301", status="passing")
    api_key_create(name="a key", scopes=["read"])
    RequestAdapterRule.objects.create(service_type="PROJECT_COORDINATOR", endpoint_pattern="/projects",
                                      action="drop", field="status", enabled=True)
    failed_run()
    AccessAttempt.objects.create(username="someone", ip_address="127.0.0.9", user_agent="t",
                                 failures_since_start=9, get_data="", post_data="", http_accept="",
                                 path_info="/admin/login/")
    AccessLog.objects.create(username="someone", ip_address="127.0.0.9", user_agent="t",
                             http_accept="", path_info="/admin/login/")
    AccessFailureLog.objects.create(username="someone", ip_address="127.0.0.9", user_agent="t",
                                    http_accept="", path_info="/admin/login/", locked_out=True)


def _every_action() -> list[tuple[type, str]]:
    request = RequestFactory().get("/admin/")
    request.user = get_user_model()(is_superuser=True, is_staff=True, is_active=True)
    return [
        (model, name)
        for model, model_admin in admin.site._registry.items()
        for name in model_admin.get_actions(request)
    ]


def _snapshot() -> dict[str, list[dict]]:
    return {
        model._meta.label: list(model.objects.order_by("pk").values())
        for model in admin.site._registry
    }


@pytest.mark.django_db
def test_a_viewer_forging_every_admin_action_gets_403_and_nothing_changes():
    _one_row_of_each()
    viewer = logged_in(staff_user("victor", VIEWERS))
    pairs = _every_action()
    # The list really is generated: today's third-party and portal actions are all in it.
    names = {(m._meta.label, a) for m, a in pairs}
    assert {("registry.RequestAdapterRule", "enable_rules"), ("registry.RequestAdapterRule", "disable_rules"),
            ("django_celery_beat.PeriodicTask", "disable_tasks"), ("registry.Service", "deregister"),
            ("workflows.WorkflowRun", "cancel_runs"), ("registry.ApiKey", "revoke"),
            ("axes.AccessAttempt", "delete_selected")} <= names
    before = _snapshot()
    for model, action in pairs:
        row = model.objects.order_by("pk").first()
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        response = viewer.post(url, {"action": action, "_selected_action": [row.pk if row else 1]})
        assert response.status_code == 403, (model._meta.label, action, response.status_code)
    assert _snapshot() == before


@pytest.mark.django_db
def test_a_viewer_is_not_offered_actions_that_need_change_and_an_operator_runs_them(admin_client):
    _one_row_of_each()
    viewer = logged_in(staff_user("victor", VIEWERS))
    rule = RequestAdapterRule.objects.order_by("-pk").first()
    page = viewer.get("/admin/registry/requestadapterrule/").content.decode()
    assert 'value="disable_rules"' not in page
    page = viewer.get("/admin/django_celery_beat/periodictask/").content.decode()
    assert 'value="disable_tasks"' not in page
    # The same POST from someone with the change permission works: the refusal above is the gate.
    response = admin_client.post("/admin/registry/requestadapterrule/",
                                 {"action": "disable_rules", "_selected_action": [rule.pk]})
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.enabled is False
