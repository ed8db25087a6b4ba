"""Roles on the server: Operators act, Viewers only look (hidden buttons, 403 on forged requests)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from berrys_portal.roles import OPERATORS, VIEWERS
from registry.models import HealthStatus, Service
from tests.dashboard.factories import failed_run
from workflows.models import RunEvent, RunStatus

pytestmark = pytest.mark.django_db


def _perms(group: str) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}"
            for p in Group.objects.get(name=group).permissions.select_related("content_type")}


def test_migrate_gives_operators_the_operate_permissions_and_viewers_only_view_ones():
    operators, viewers = _perms(OPERATORS), _perms(VIEWERS)
    assert {"dashboard.operate_run", "dashboard.operate_service"} <= operators
    assert {"registry.view_service", "workflows.view_workflowrun"} <= viewers
    assert all(p.split(".")[1].startswith("view_") for p in viewers)


def test_a_viewer_gets_403_retrying_a_run_and_the_run_is_untouched(viewer_client):
    run = failed_run()
    response = viewer_client.post(f"/admin/dashboard/runs/{run.pk}/retry/")
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert not RunEvent.objects.filter(run=run, kind=RunEvent.Kind.RETRIED).exists()


def test_an_operator_retries_a_failed_run_from_the_dashboard(operator_client, operator):
    run = failed_run()
    response = operator_client.post(f"/admin/dashboard/runs/{run.pk}/retry/", {"next": "/admin/"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    event = RunEvent.objects.get(run=run, kind=RunEvent.Kind.RETRIED)
    assert event.actor == operator.username and event.step_name == "assign_agents"


def test_the_retry_view_refuses_get_and_never_redirects_off_site(operator_client):
    run = failed_run()
    assert operator_client.get(f"/admin/dashboard/runs/{run.pk}/retry/").status_code == 405
    response = operator_client.post(f"/admin/dashboard/runs/{run.pk}/retry/", {"next": "https://evil.example/"})
    assert response["Location"] == "/admin/"


def test_retrying_a_run_that_is_not_failed_says_why(operator_client):
    run = failed_run()
    operator_client.post(f"/admin/dashboard/runs/{run.pk}/retry/")
    response = operator_client.post(f"/admin/dashboard/runs/{run.pk}/retry/", follow=True)
    assert "was not retried" in response.content.decode()


def test_anonymous_users_are_sent_to_the_login_page(db):
    run = failed_run()
    response = Client().post(f"/admin/dashboard/runs/{run.pk}/retry/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert Client().get("/admin/").status_code == 302


def test_the_dashboard_shows_the_retry_button_to_operators_only(operator_client, viewer_client):
    run = failed_run()
    op_page = operator_client.get("/admin/").content.decode()
    view_page = viewer_client.get("/admin/").content.decode()
    assert f'data-run="{run.pk}"' in op_page
    assert str(run.pk)[:8] in view_page  # the viewer sees the failed run ...
    assert "data-run=" not in view_page  # ... but no button


def test_a_viewer_sees_no_service_actions_and_a_forged_action_post_is_refused(viewer_client):
    svc = Service.objects.create(name="s1", type="TOOL_INTEGRATION", url="http://127.0.0.1:9",
                                 status=HealthStatus.PASSING)
    page = viewer_client.get("/admin/registry/service/")
    assert page.status_code == 200
    assert 'name="action"' not in page.content.decode()
    forged = viewer_client.post("/admin/registry/service/",
                                {"action": "deregister", "_selected_action": [svc.pk]})
    assert forged.status_code == 403
    assert Service.objects.filter(pk=svc.pk).exists()
    edit = viewer_client.post(f"/admin/registry/service/{svc.pk}/change/", {"name": "hacked"})
    assert edit.status_code == 403


def test_an_operator_runs_the_same_service_action(operator_client):
    svc = Service.objects.create(name="s2", type="TOOL_INTEGRATION", url="http://127.0.0.1:9",
                                 status=HealthStatus.PASSING)
    response = operator_client.post("/admin/registry/service/",
                                    {"action": "maintenance_on", "_selected_action": [svc.pk]})
    assert response.status_code == 302
    svc.refresh_from_db()
    assert svc.status == HealthStatus.MAINTENANCE


RUN_VIEWS = ["retry", "cancel", "edit-input", "rerun", "answer"]


@pytest.mark.parametrize("view", RUN_VIEWS)
def test_a_viewer_gets_403_on_every_run_action_view(viewer_client, view):
    run = failed_run()
    assert viewer_client.get(f"/admin/workflows/workflowrun/{run.pk}/{view}/").status_code == 403
    assert viewer_client.post(f"/admin/workflows/workflowrun/{run.pk}/{view}/", {}).status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


@pytest.mark.parametrize("action", ["retry_runs", "cancel_runs"])
def test_a_viewer_has_no_bulk_run_actions_and_a_forged_one_is_refused(viewer_client, action):
    run = failed_run()
    page = viewer_client.get("/admin/workflows/workflowrun/").content.decode()
    assert action not in page
    forged = viewer_client.post("/admin/workflows/workflowrun/", {"action": action, "_selected_action": [run.pk]})
    assert forged.status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


def test_the_run_page_hides_the_operator_buttons_from_viewers(viewer_client, operator_client):
    run = failed_run()
    url = f"/admin/workflows/workflowrun/{run.pk}/change/"
    assert "Retry from failed step" not in viewer_client.get(url).content.decode()
    assert "Retry from failed step" in operator_client.get(url).content.decode()


def test_an_operator_retries_from_the_run_page_and_bulk_cancels(operator_client):
    run = failed_run()
    response = operator_client.post(f"/admin/workflows/workflowrun/{run.pk}/retry/")
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    response = operator_client.post("/admin/workflows/workflowrun/",
                                    {"action": "cancel_runs", "_selected_action": [run.pk]})
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


@pytest.mark.parametrize("action", ["reset_breaker", "force_open_breaker", "check_now"])
def test_breaker_and_check_actions_are_for_operators_only(viewer_client, operator_client, action):
    svc = Service.objects.create(name="brk", type="TOOL_INTEGRATION", url="http://127.0.0.1:9",
                                 status=HealthStatus.PASSING)
    assert action not in viewer_client.get("/admin/registry/service/").content.decode()
    assert action in operator_client.get("/admin/registry/service/").content.decode()
    forged = viewer_client.post("/admin/registry/service/", {"action": action, "_selected_action": [svc.pk]})
    assert forged.status_code == 403


@pytest.mark.django_db(transaction=True)  # breaker events are written on another connection
def test_an_operator_resets_a_breaker_and_the_event_names_them(operator_client, operator):
    from registry.breakers import breaker_for

    svc = Service.objects.create(name="brk2", type="TOOL_INTEGRATION", url="http://127.0.0.1:9",
                                 status=HealthStatus.PASSING)
    breaker_for(svc).force_open(reason="test", actor="test")
    response = operator_client.post("/admin/registry/service/",
                                    {"action": "reset_breaker", "_selected_action": [svc.pk]})
    assert response.status_code == 302
    assert breaker_for(svc).snapshot().state == "closed"
    from registry.models import BreakerEvent

    assert BreakerEvent.objects.filter(service=svc, new_state="closed", actor=operator.username).exists()


def test_roles_are_synced_by_one_post_migrate_receiver_from_the_kernel():
    from django.db.models.signals import post_migrate

    ours = [ref() for _key, ref, _ in post_migrate.receivers
            if ref() is not None and not ref().__module__.startswith("django.")]
    assert [f"{f.__module__}.{f.__name__}" for f in ours] == ["berrys_portal.roles.roles_sync"]
