"""Admin: service list and actions, API keys shown once and revocable, the Operators and Viewers groups."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.test import Client

from registry.auth import api_key_create
from registry.models import ApiKey, HealthStatus, Service, StatusChange
from tests.personas import logged_in, staff_user

# Runs on PostgreSQL + Redis and on the embedded default (SQLite); see tests/conftest.py.
pytestmark = pytest.mark.both_dbs


@pytest.fixture
def operator(db) -> Client:
    return logged_in(staff_user("olga", "Operators"))


@pytest.fixture
def viewer(db) -> Client:
    return logged_in(staff_user("victor", "Viewers"))


@pytest.fixture
def services(db) -> list[Service]:
    return [
        Service.objects.create(name=f"planner-{i}", type="PLANNING_SYSTEM", url=f"http://127.0.0.1:900{i}",
                               status=HealthStatus.PASSING)
        for i in range(3)
    ]


def _action(client: Client, action: str, objs) -> None:
    response = client.post(
        "/admin/registry/service/",
        {"action": action, "_selected_action": [o.pk for o in objs]},
        follow=True,
    )
    assert response.status_code == 200
    return response


def test_the_service_list_shows_the_columns_and_a_status_badge(operator, services):
    response = operator.get("/admin/registry/service/?status__exact=passing&q=planner")
    assert response.status_code == 200
    html = response.content.decode()
    for column in ("column-name", "column-type_wrapped", "column-status_badge", "column-url", "column-approval",
                   "column-last_heartbeat", "column-criticality", "column-breaker_badge", "column-last_checked"):
        assert column in html
    assert "Passing</span>" in html
    assert operator.get(f"/admin/registry/service/{services[0].pk}/change/").status_code == 200


def test_operators_put_services_in_maintenance_and_back(operator, services):
    response = _action(operator, "maintenance_on", services[:2])
    assert "2 service(s) in maintenance." in response.content.decode()
    statuses = dict(Service.objects.values_list("name", "status"))
    assert statuses == {"planner-0": "maintenance", "planner-1": "maintenance", "planner-2": "passing"}
    _action(operator, "maintenance_off", services[:1])
    assert Service.objects.get(name="planner-0").status == HealthStatus.UNKNOWN
    assert StatusChange.objects.filter(reason__contains="by olga").count() == 3


def test_operators_deregister_services(operator, services):
    response = _action(operator, "deregister", services[:2])
    assert "Deregistered 2 service(s)." in response.content.decode()
    assert list(Service.objects.values_list("name", flat=True)) == ["planner-2"]


def test_viewers_can_look_but_not_act(viewer, services):
    response = viewer.get("/admin/registry/service/")
    assert response.status_code == 200
    assert "maintenance_on" not in response.content.decode()
    viewer.post("/admin/registry/service/", {"action": "deregister", "_selected_action": [services[0].pk]})
    assert Service.objects.count() == 3
    assert viewer.get(f"/admin/registry/service/{services[0].pk}/change/").status_code == 200
    assert viewer.post(f"/admin/registry/service/{services[0].pk}/delete/", {"post": "yes"}).status_code == 403


def test_an_api_key_created_in_the_admin_is_shown_once_on_its_own_page_and_works(operator):
    response = operator.post(
        "/admin/registry/apikey/add/",
        {"name": "planning-system", "scopes": ["read", "register"], "expires_in_days": "30"},
    )
    # The answer to the POST itself shows the key: no redirect, nothing cached.
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    match = re.search(r'id="bp-new-api-key"[^>]*>(bp_[A-Za-z0-9_-]+)<', html)
    assert match, html
    plain = match.group(1)
    # Never in a cookie (the messages framework keeps its messages in one) nor in the session.
    assert all(plain not in morsel.value for morsel in response.cookies.values())
    assert all(plain not in str(value) for value in operator.session.values())
    key = ApiKey.objects.get(name="planning-system")
    assert key.scopes == ["metrics", "registry:read", "registry:write"] and key.expires_at is not None
    for page in ("/admin/registry/apikey/", f"/admin/registry/apikey/{key.pk}/change/", "/admin/"):
        assert plain not in operator.get(page).content.decode()
    api = Client(HTTP_AUTHORIZATION=f"Token {plain}")
    assert api.get("/registry/services").status_code == 200


def test_operators_revoke_keys_from_the_admin(operator):
    key, plain = api_key_create(name="leaked", scopes=["read"])
    response = operator.post(
        "/admin/registry/apikey/", {"action": "revoke", "_selected_action": [key.pk]}, follow=True
    )
    assert "Revoked 1 key(s)" in response.content.decode()
    assert Client(HTTP_AUTHORIZATION=f"Token {plain}").get("/registry/services").status_code == 401


def test_groups_grant_operators_everything_and_viewers_view_only(db):
    operators = set(Group.objects.get(name="Operators").permissions.values_list(
        "content_type__app_label", "codename"))
    viewers = set(Group.objects.get(name="Viewers").permissions.values_list(
        "content_type__app_label", "codename"))
    for codename in ("add_service", "change_service", "delete_service", "view_service", "change_apikey"):
        assert ("registry", codename) in operators
    assert ("django_celery_beat", "change_periodictask") in operators
    assert ("registry", "view_service") in viewers
    assert ("django_celery_beat", "view_periodictask") in viewers
    assert all(codename.startswith("view_") for _, codename in viewers)
    # Every model of the synced apps, including those later migrations added (workflows).
    from django.contrib.auth.models import Permission

    every = set(Permission.objects.filter(
        content_type__app_label__in=["registry", "workflows", "django_celery_beat"]
    ).values_list("content_type__app_label", "codename"))
    assert any(label == "workflows" for label, _ in every)
    assert every <= operators
    assert {p for p in every if p[1].startswith("view_")} == viewers


def test_demo_setup_refuses_to_run_under_the_production_profile(db, settings):
    settings.PRODUCTION = True
    with pytest.raises(CommandError, match="refuses to run under DJANGO_ENV=production"):
        call_command("demo_setup", "--username", "demo", "--password", "demo-pass-123", stdout=io.StringIO())
    assert not get_user_model().objects.filter(username="demo").exists()


def test_demo_setup_creates_an_operator_in_the_operators_group(db):
    call_command("demo_setup", "--username", "demo", "--password", "demo-pass-123", stdout=io.StringIO())
    user = get_user_model().objects.get(username="demo")
    assert user.is_staff and user.groups.filter(name="Operators").exists()
    assert user.has_perm("registry.change_service")


def test_the_admin_refuses_link_local_urls(operator, services):
    svc = services[0]
    response = operator.post(f"/admin/registry/service/{svc.pk}/change/", {
        "name": svc.name, "type": svc.type, "url": "http://169.254.169.254/", "health_url": "",
        "criticality": "non_critical", "metadata": "{}", "capabilities": "[]", "endpoints": "[]",
        "tags": "[]", "check_interval_seconds": 15, "check_timeout_seconds": 5,
        "failures_before_critical": 2, "successes_before_passing": 1,
    })
    assert response.status_code == 200  # the form again, with the error
    assert "is link-local (169.254.0.0/16), which is always refused" in response.content.decode()
    svc.refresh_from_db()
    assert svc.url == "http://127.0.0.1:9000"


def test_deleting_in_the_admin_keeps_a_deregistered_record(operator, services):
    response = operator.post(f"/admin/registry/service/{services[0].pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Service.objects.filter(pk=services[0].pk).exists()
    assert StatusChange.objects.filter(service_name="planner-0", new_status="deregistered").exists()
