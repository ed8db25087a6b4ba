"""Identity: services belong to the key that registered them; key limits, quotas, approval, audit.

The hijack scenario of the identity issue is replayed step by step with a second
key: every step is refused and discovery answers as before.
"""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from berrys_portal.errors import NoEligibleServiceError
from registry.auth import api_key_create, api_key_revoke
from registry.client import service_client, service_discovery
from registry.models import ApiKey, AuditEvent, HealthStatus, Service
from tests.personas import logged_in, staff_user

pytestmark = pytest.mark.both_dbs

GUIDE_PAYLOAD = {  # the integration guide's registration, byte for byte
    "name": "my-service",
    "type": "MY_SERVICE_TYPE",
    "url": "http://my-service:8000",
    "health_url": "http://my-service:8000/health",
    "metadata": {"version": "1.0.0"},
}
REAL = {"name": "planning-system", "type": "PLANNING_SYSTEM", "url": "http://127.0.0.1:8101",
        "health_url": "http://127.0.0.1:8101/health"}


def _client(scopes, name, **limits) -> APIClient:
    key, plain = api_key_create(name=name, scopes=scopes, **limits)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
    client.api_key = key
    return client


@pytest.fixture
def planner(db) -> APIClient:
    """The real planning system's key, limited to its own type and names."""
    return _client(["registry:read", "registry:write"], "planning-system",
                   service_types=["PLANNING_SYSTEM"], name_patterns=["planning-system*"])


@pytest.fixture
def attacker(db) -> APIClient:
    """An ordinary key of another client: what the old `register` + `read` scopes became."""
    return _client(["registry:read", "registry:write"], "someone-else")


def _discovered(client) -> list[str]:
    body = client.get("/discovery/PLANNING_SYSTEM?all=1").json()
    return [(s["name"], s["url"]) for s in body["services"]]


@override_settings(REGISTRY_APPROVAL_TYPES=["PLANNING_SYSTEM"])
def test_the_hijack_scenario_is_refused_step_by_step(planner, attacker):
    operator = logged_in(staff_user("olga", "Operators"))
    created = planner.post("/registry/services", REAL, format="json")
    assert created.status_code == 201
    real = Service.objects.get(pk=created.json()["id"])
    assert real.owner == planner.api_key and real.pending_approval
    assert operator.post("/admin/registry/service/", {"action": "approve", "_selected_action": [real.pk]},
                         follow=True).status_code == 200
    Service.objects.filter(pk=real.pk).update(status=HealthStatus.PASSING)
    before = _discovered(attacker)
    assert before == [(REAL["name"], REAL["url"])]

    # 1. Another planning-system instance at the attacker's URL: held for approval, never discovered.
    rogue = attacker.post("/registry/services", {"name": "planning-system-2", "type": "PLANNING_SYSTEM",
                                                 "url": "http://127.0.0.2:9999"}, format="json")
    assert rogue.status_code == 201 and rogue.json()["pending_approval"] is True
    Service.objects.filter(pk=rogue.json()["id"]).update(status=HealthStatus.PASSING)  # even if it answers
    assert _discovered(attacker) == before
    # 2. The real one in maintenance.
    response = attacker.post(f"/registry/services/{real.pk}/maintenance", {"enabled": True}, format="json")
    assert response.status_code == 403
    assert "registered by another API key" in response.json()["detail"]
    # 3. Its health_url PATCHed.
    response = attacker.patch(f"/registry/services/{real.pk}", {"health_url": "http://127.0.0.2:9999/h"},
                              format="json")
    assert response.status_code == 403
    # 4. Re-registered with another type (and, by its owner, refused as a type change).
    response = attacker.post("/registry/services", dict(REAL, type="PROJECT_COORDINATOR"), format="json")
    assert response.status_code == 403
    assert planner.post("/registry/services", dict(REAL, type="PROJECT_COORDINATOR"),
                        format="json").status_code == 403  # outside the planner key's types
    # 5. Deleted.
    assert attacker.delete(f"/registry/services/{real.pk}").status_code == 403
    fresh = Service.objects.get(pk=real.pk)
    assert (fresh.type, fresh.status, fresh.health_url) == ("PLANNING_SYSTEM", HealthStatus.PASSING,
                                                            REAL["health_url"])
    assert _discovered(attacker) == before
    # 6. A dead TTL service kept "passing" by a stranger's heartbeat.
    Service.objects.filter(pk=real.pk).update(ttl_seconds=30, status=HealthStatus.CRITICAL,
                                              last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert attacker.put(f"/registry/services/{real.pk}/heartbeat").status_code == 403
    assert Service.objects.get(pk=real.pk).status == HealthStatus.CRITICAL
    response = attacker.get("/discovery/PLANNING_SYSTEM")
    assert response.status_code == 503
    assert "planning-system-2: pending approval" in response.json()["detail"]
    # The owner's heartbeat still works.
    assert planner.put(f"/registry/services/{real.pk}/heartbeat").status_code == 200
    assert _discovered(attacker) == before


def test_an_owner_re_registering_with_another_type_gets_409(planner):
    planner.post("/registry/services", REAL, format="json")
    admin = _client(["registry:admin"], "registry-admin")
    response = admin.post("/registry/services", dict(REAL, type="PROJECT_COORDINATOR"), format="json")
    assert response.status_code == 409
    assert "cannot change its type" in response.json()["detail"]
    pk = Service.objects.get(name=REAL["name"]).pk
    response = planner.patch(f"/registry/services/{pk}", {"type": "AGENT_ORCHESTRATOR"}, format="json")
    assert response.status_code == 409


def test_a_key_limited_to_a_type_cannot_register_another(planner):
    response = planner.post("/registry/services", dict(REAL, type="PROJECT_COORDINATOR",
                                                       url="http://127.0.0.1:8102"), format="json")
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "This API key may register only services of type PLANNING_SYSTEM, not PROJECT_COORDINATOR."
    )
    response = planner.post("/registry/services", dict(REAL, name="coordinator"), format="json")
    assert response.status_code == 403
    assert "names matching planning-system*" in response.json()["detail"]
    assert not Service.objects.exists()


def test_ownerless_services_are_changed_only_by_registry_admin_keys_and_operators(planner):
    legacy = Service.objects.create(name="planning-system", type="PLANNING_SYSTEM", url=REAL["url"])
    response = planner.put(f"/registry/services/{legacy.pk}/heartbeat")
    assert response.status_code == 403
    assert "has no owner" in response.json()["detail"]
    admin = _client(["registry:admin"], "registry-admin")
    assert admin.put(f"/registry/services/{legacy.pk}/heartbeat").status_code == 200
    assert admin.post("/registry/services", REAL, format="json").status_code == 200
    assert Service.objects.get(pk=legacy.pk).owner is None  # an admin key acting does not take it


def test_an_operator_moves_ownership_in_the_admin_and_it_is_audited(planner, attacker):
    legacy = Service.objects.create(name="planning-system", type="PLANNING_SYSTEM", url=REAL["url"])
    operator = logged_in(staff_user("olga", "Operators"))
    form = operator.get(f"/admin/registry/service/{legacy.pk}/change/")
    assert form.status_code == 200 and 'name="owner"' in form.content.decode()
    response = operator.post(f"/admin/registry/service/{legacy.pk}/change/", {
        "name": legacy.name, "type": legacy.type, "url": legacy.url, "health_url": "",
        "criticality": legacy.criticality, "metadata": "{}", "capabilities": "[]", "endpoints": "[]",
        "tags": "[]", "owner": planner.api_key.pk, "check_interval_seconds": 15,
        "check_timeout_seconds": 5, "failures_before_critical": 2, "successes_before_passing": 1,
    })
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Service.objects.get(pk=legacy.pk).owner == planner.api_key
    event = AuditEvent.objects.get(action=AuditEvent.Action.OWNER_CHANGED)
    assert event.actor == "olga" and event.details["to"] == str(planner.api_key) and event.details["from"] is None
    assert planner.put(f"/registry/services/{legacy.pk}/heartbeat").status_code == 200
    assert attacker.put(f"/registry/services/{legacy.pk}/heartbeat").status_code == 403


def test_a_viewer_cannot_approve(db):
    pending = Service.objects.create(name="p", type="PLANNING_SYSTEM", url=REAL["url"], pending_approval=True)
    viewer = logged_in(staff_user("victor", "Viewers"))
    response = viewer.post("/admin/registry/service/", {"action": "approve", "_selected_action": [pending.pk]})
    assert response.status_code == 403
    assert Service.objects.get(pk=pending.pk).pending_approval


@override_settings(REGISTRY_APPROVAL_TYPES=["PLANNING_SYSTEM"])
def test_a_pending_instance_is_not_discovered_nor_called_until_approved(planner):
    pk = planner.post("/registry/services", REAL, format="json").json()["id"]
    assert planner.get("/discovery/PLANNING_SYSTEM").status_code == 503
    with pytest.raises(NoEligibleServiceError):
        service_client.get(service="PLANNING_SYSTEM", endpoint="/plans")
    operator = logged_in(staff_user("olga", "Operators"))
    operator.post("/admin/registry/service/", {"action": "approve", "_selected_action": [pk]}, follow=True)
    assert planner.get("/discovery/PLANNING_SYSTEM").json()["id"] == pk
    assert service_discovery.get_service_by_type("PLANNING_SYSTEM").pk == pk
    event = AuditEvent.objects.get(action=AuditEvent.Action.SERVICE_APPROVED)
    assert event.actor == "olga" and event.details["service_id"] == pk
    # An approved instance re-registering stays approved; other types never wait.
    assert planner.post("/registry/services", REAL, format="json").json()["pending_approval"] is False


@override_settings(REGISTRY_KEY_MAX_INSTANCES=2)
def test_the_instance_quota_refuses_a_third_instance_naming_the_limit(planner):
    for i in range(2):
        assert planner.post("/registry/services", dict(REAL, name=f"planning-system-{i}"),
                            format="json").status_code == 201
    response = planner.post("/registry/services", dict(REAL, name="planning-system-9"), format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "quota_exceeded"
    assert "its limit of 2 (REGISTRY_KEY_MAX_INSTANCES)" in response.json()["detail"]
    assert Service.objects.count() == 2
    # Re-registering an instance it has is no new instance.
    assert planner.post("/registry/services", dict(REAL, name="planning-system-0"), format="json").status_code == 200
    event = AuditEvent.objects.get(action=AuditEvent.Action.QUOTA_REFUSED)
    assert event.actor == "apikey:planning-system" and "REGISTRY_KEY_MAX_INSTANCES" in event.details["detail"]
    # A per-key limit overrides the setting.
    ApiKey.objects.filter(pk=planner.api_key.pk).update(max_instances=3)
    from registry.auth import api_key_cache_clear

    api_key_cache_clear()
    assert planner.post("/registry/services", dict(REAL, name="planning-system-9"), format="json").status_code == 201


@override_settings(REGISTRY_KEY_MAX_HOSTS=1)
def test_the_host_quota_counts_url_and_health_url_hosts(planner):
    assert planner.post("/registry/services", REAL, format="json").status_code == 201
    same_host = dict(REAL, name="planning-system-b", url="http://127.0.0.1:8102")
    assert planner.post("/registry/services", same_host, format="json").status_code == 201
    other = dict(REAL, name="planning-system-c", url="http://127.0.0.3:8101", health_url="")
    response = planner.post("/registry/services", other, format="json")
    assert response.status_code == 403
    assert "2 distinct hosts, over its limit of 1 (REGISTRY_KEY_MAX_HOSTS)" in response.json()["detail"]
    pk = Service.objects.get(name="planning-system").pk
    response = planner.patch(f"/registry/services/{pk}", {"health_url": "http://127.0.0.4/health"},
                             format="json")
    assert response.status_code == 403 and response.json()["code"] == "quota_exceeded"
    assert AuditEvent.objects.filter(action=AuditEvent.Action.QUOTA_REFUSED).count() == 2


def test_the_guides_client_with_a_key_scoped_to_its_type_registers_heartbeats_and_discovers(db):
    out = io.StringIO()
    call_command("create_api_key", "--name", "my-service", "--scopes", "registry:read,registry:write",
                 "--service-types", "MY_SERVICE_TYPE", "--name-patterns", "my-service*", stdout=out)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {out.getvalue().strip().splitlines()[-1]}")
    response = client.post("/registry/services", GUIDE_PAYLOAD, format="json")
    assert response.status_code == 201, response.content
    pk = response.json()["id"]
    assert client.put(f"/registry/services/{pk}/heartbeat").status_code == 200
    assert client.post("/registry/services", GUIDE_PAYLOAD, format="json").status_code == 200
    found = client.get("/discovery/MY_SERVICE_TYPE")
    assert found.status_code == 200 and found.json()["id"] == pk
    assert service_discovery.get_service_by_type("MY_SERVICE_TYPE").pk == pk


def test_key_creation_and_revocation_are_audited_whatever_creates_them(db):
    call_command("create_api_key", "--name", "cli", "--scopes", "metrics", stdout=io.StringIO())
    key, _ = api_key_create(name="svc", scopes=["registry:read"], actor="olga")
    api_key_revoke(keys=ApiKey.objects.filter(pk=key.pk), actor="olga")
    api_key_revoke(keys=ApiKey.objects.filter(pk=key.pk), actor="olga")  # twice: one row
    rows = list(AuditEvent.objects.order_by("id").values_list("action", "actor", "target"))
    cli = ApiKey.objects.get(name="cli")
    assert rows == [
        ("key_created", "command create_api_key", str(cli)),
        ("key_created", "olga", str(key)),
        ("key_revoked", "olga", str(key)),
    ]


def test_old_scope_names_are_accepted_with_a_deprecation_warning(db, caplog):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "--name", "old", "--scopes", "register,read", stdout=out, stderr=err)
    assert "Deprecated scope name(s): read (now registry:read+metrics), register (now registry:write)" in err.getvalue()
    assert ApiKey.objects.get(name="old").scopes == ["metrics", "registry:read", "registry:write"]
    assert "deprecated scope name(s)" in caplog.text


def test_a_key_row_still_holding_old_names_keeps_working(db):
    """A row the data migration did not touch (written by an old process during the upgrade)."""
    key, plain = api_key_create(name="legacy", scopes=["registry:read"])
    ApiKey.objects.filter(pk=key.pk).update(scopes=["read", "register"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
    assert client.get("/registry/services").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.post("/registry/services", REAL, format="json").status_code == 201
    assert client.get("/workflows/runs").status_code == 403  # `read` no longer reads runs


def test_a_key_cannot_be_deleted_while_it_owns_services(planner):
    from django.db.models import ProtectedError

    planner.post("/registry/services", REAL, format="json")
    with pytest.raises(ProtectedError):
        ApiKey.objects.filter(pk=planner.api_key.pk).delete()


def test_the_data_migration_maps_old_scopes_to_the_nearest_new_ones(db):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("registry.migrations.0006_identity_ownership_scopes_audit")
    rows = {name: api_key_create(name=name, scopes=["metrics"])[0] for name in ("r", "rw", "wf", "gw")}
    for name, old in (("r", ["read"]), ("rw", ["read", "register"]), ("wf", ["read", "workflows"]),
                      ("gw", ["gateway"])):
        ApiKey.objects.filter(pk=rows[name].pk).update(scopes=old)
    migration.scopes_forward(apps, None)
    got = {k.name: (k.scopes, k.gateway_allow) for k in ApiKey.objects.all()}
    assert got == {
        "r": (["metrics", "registry:read"], []),
        "rw": (["metrics", "registry:read", "registry:write"], []),
        "wf": (["metrics", "registry:read", "workflows"], []),
        "gw": (["gateway"], ["*:*"]),
    }


def test_operators_mint_only_the_scopes_the_setting_allows_and_never_registry_admin(db):
    operator = logged_in(staff_user("olga", "Operators"))
    page = operator.get("/admin/registry/apikey/add/").content.decode()
    assert 'value="registry:write"' in page and 'value="registry:admin"' not in page
    assert 'value="workflows:operate"' not in page  # not in API_KEY_ADMIN_MINTABLE_SCOPES by default
    response = operator.post("/admin/registry/apikey/add/", {"name": "forged", "scopes": ["registry:admin"]})
    assert response.status_code == 200 and not ApiKey.objects.filter(name="forged").exists()
    assert "registry:admin is not one of the available choices" in response.content.decode()
    with override_settings(API_KEY_ADMIN_MINTABLE_SCOPES=["metrics"]):
        response = operator.post("/admin/registry/apikey/add/", {"name": "w", "scopes": ["registry:write"]})
        assert not ApiKey.objects.filter(name="w").exists()


def test_superusers_mint_registry_admin_and_it_is_audited(db):
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.create_superuser("root", "root@example.invalid", "pw")
    response = logged_in(root).post("/admin/registry/apikey/add/", {
        "name": "ops", "scopes": ["registry:admin"], "gateway_allow": "", "service_types": "",
        "name_patterns": "",
    }, follow=True)
    assert response.status_code == 200
    key = ApiKey.objects.get(name="ops")
    assert key.scopes == ["registry:admin"]
    assert AuditEvent.objects.get(action="key_created").actor == "root"


def test_the_audit_log_is_browsable_and_read_only_in_the_admin(db):
    api_key_create(name="svc", scopes=["registry:read"], actor="olga")
    viewer = logged_in(staff_user("victor", "Viewers"))
    operator = logged_in(staff_user("olga", "Operators"))
    for client in (viewer, operator):
        page = client.get("/admin/registry/auditevent/")
        assert page.status_code == 200 and "API key created" in page.content.decode()
    event = AuditEvent.objects.get()
    assert operator.get("/admin/registry/auditevent/add/").status_code == 403
    assert operator.post(f"/admin/registry/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.count() == 1


def test_the_gateway_allow_list_limits_types_and_methods(db):
    client = _client(["gateway"], "dash", gateway_allow=["AGENT_ORCHESTRATOR:POST"])
    response = client.get("/gateway/AGENT_ORCHESTRATOR/tasks")
    assert response.status_code == 403
    assert "does not include AGENT_ORCHESTRATOR:GET (it allows: AGENT_ORCHESTRATOR:POST)" in response.json()["detail"]
    assert client.post("/gateway/PROJECT_COORDINATOR/projects", {}, format="json").status_code == 403
    # Allowed: it reaches discovery (no instance registered here).
    assert client.post("/gateway/AGENT_ORCHESTRATOR/tasks", {}, format="json").status_code == 404
    with pytest.raises(ValueError, match="Gateway allow-list entry 'NOPE:FETCH'"):
        api_key_create(name="bad", scopes=["gateway"], gateway_allow=["NOPE:FETCH"])


@pytest.mark.django_db(transaction=True)
@override_settings(REGISTRY_KEY_MAX_INSTANCES=3)
def test_concurrent_registrations_by_one_key_cannot_slip_past_its_quota():
    import threading

    from django.db import connections

    _, plain = api_key_create(name="racer", scopes=["registry:write"])
    barrier = threading.Barrier(10)
    statuses: list[int] = []
    lock = threading.Lock()

    def register(i: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
        try:
            barrier.wait(timeout=30)
            code = client.post("/registry/services", dict(REAL, name=f"planning-system-{i}"),
                               format="json").status_code
            with lock:
                statuses.append(code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=register, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [201] * 3 + [403] * 7
    assert Service.objects.count() == 3
    assert AuditEvent.objects.filter(action=AuditEvent.Action.QUOTA_REFUSED).count() == 7


def test_a_typo_in_the_mintable_scopes_setting_is_a_system_check_error():
    from registry.scopes import check_scope_settings

    with override_settings(API_KEY_ADMIN_MINTABLE_SCOPES=["registry:read", "metric"]):
        errors = check_scope_settings()
    assert [e.id for e in errors] == ["registry.E101"] and "metric" in errors[0].msg
    assert check_scope_settings() == []


def test_keys_are_revoked_in_the_admin_never_deleted(db):
    key, _ = api_key_create(name="svc", scopes=["registry:read"])
    operator = logged_in(staff_user("olga", "Operators"))
    assert operator.post(f"/admin/registry/apikey/{key.pk}/delete/", {"post": "yes"}).status_code == 403
    response = operator.post("/admin/registry/apikey/", {"action": "delete_selected", "_selected_action": [key.pk]})
    assert response.status_code == 403
    assert ApiKey.objects.filter(pk=key.pk).exists()
    operator.post("/admin/registry/apikey/", {"action": "revoke", "_selected_action": [key.pk]}, follow=True)
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    assert AuditEvent.objects.filter(action="key_revoked", actor="olga").count() == 1


def test_after_upgrading_an_operator_gives_ownerless_services_to_their_key_in_bulk(planner):
    legacy = [Service.objects.create(name=f"planning-system-{i}", type="PLANNING_SYSTEM",
                                     url=f"http://127.0.0.1:81{i:02d}") for i in range(3)]
    other = Service.objects.create(name="coordinator", type="PROJECT_COORDINATOR", url="http://127.0.0.1:8200")
    out = io.StringIO()
    call_command("assign_service_owner", "--key", planner.api_key.prefix, "--type", "PLANNING_SYSTEM",
                 "--dry-run", stdout=out)
    assert "3 service(s) (dry run)" in out.getvalue() and not Service.objects.filter(owner__isnull=False).exists()
    call_command("assign_service_owner", "--key", planner.api_key.prefix, "--type", "PLANNING_SYSTEM",
                 "--name", "planning-system-*", stdout=io.StringIO())
    assert {s.owner_id for s in Service.objects.filter(pk__in=[s.pk for s in legacy])} == {planner.api_key.pk}
    assert Service.objects.get(pk=other.pk).owner is None
    assert AuditEvent.objects.filter(action="owner_changed", actor="command assign_service_owner").count() == 3
    assert planner.post("/registry/services", dict(REAL, name="planning-system-0", url="http://127.0.0.1:8100"),
                        format="json").status_code == 200
    with pytest.raises(Exception, match="matches 0 unrevoked keys"):
        call_command("assign_service_owner", "--key", "bp_nothing", stdout=io.StringIO())
