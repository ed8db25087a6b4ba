"""Every API endpoint × every scope × owner / non-owner, generated from the URL conf.

``RULES`` says, for each endpoint (view) and method, which single scopes open it
and whether it acts on something a key owns (a service, a run, a gateway
target). The endpoint list is read from the URL conf, so an endpoint added
without a rule here fails ``test_every_endpoint_has_a_rule``.

The expected outcome is written out per scope here (not derived from
``registry.scopes``), so a change to what a scope implies shows up as a failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework.views import APIView

import tests.workflows.definitions  # noqa: F401 - the test_human workflow
from registry.auth import api_key_create
from registry.models import ApiKey, HealthStatus, Service
from workflows.engine import run_start
from workflows.models import RunStatus, StepStatus, WorkflowRun

ALL_SCOPES = list(ApiKey.Scope.values)
REGISTRY_READERS = {"registry:read"}
REGISTRY_WRITERS = {"registry:write", "registry:admin"}
RUN_READERS = {"runs:read", "runs:read:all", "workflows", "workflows:operate"}
RUN_ACTORS = {"workflows", "workflows:operate"}


@dataclass(frozen=True)
class Rule:
    """Who may call one endpoint with one method, and what a successful call answers."""

    scopes: set[str] | None  # None: public (no key needed)
    ok: int
    owned: str = ""  # "service", "run", "gateway" or "" (nothing owned)
    # Scopes that reach what other keys own (registry:admin, workflows:operate, ...).
    everyone: set[str] = field(default_factory=set)
    not_owner: int = 403  # what a key that does not own the thing gets
    path: str = ""
    body: dict | None = None


SERVICE = "/registry/services/{service}"
RUN = "/workflows/runs/{run}"
REGISTRATION = {"name": "planner", "type": "PLANNING_SYSTEM", "url": "http://127.0.0.1:9000"}

# (view name, method) -> rule. A new endpoint needs an entry here.
RULES: dict[tuple[str, str], Rule] = {
    ("ServiceCollectionView", "GET"): Rule(REGISTRY_READERS, 200, path="/registry/services"),
    # Re-registering the (name, url) of the fixture's service: its owner or registry:admin only.
    ("ServiceCollectionView", "POST"): Rule(REGISTRY_WRITERS, 200, owned="service", everyone={"registry:admin"},
                                            path="/registry/services", body=REGISTRATION),
    ("ServiceDetailView", "GET"): Rule(REGISTRY_READERS, 200, path=SERVICE),
    ("ServiceDetailView", "PATCH"): Rule(REGISTRY_WRITERS, 200, owned="service", everyone={"registry:admin"},
                                         path=SERVICE, body={"tags": ["x"]}),
    ("ServiceDetailView", "DELETE"): Rule(REGISTRY_WRITERS, 204, owned="service", everyone={"registry:admin"},
                                          path=SERVICE),
    ("ServiceHeartbeatView", "PUT"): Rule(REGISTRY_WRITERS, 200, owned="service", everyone={"registry:admin"},
                                          path=SERVICE + "/heartbeat"),
    ("ServiceMaintenanceView", "POST"): Rule(REGISTRY_WRITERS, 200, owned="service", everyone={"registry:admin"},
                                             path=SERVICE + "/maintenance",
                                             body={"enabled": True, "reason": "upgrade"}),
    ("DiscoveryView", "GET"): Rule(REGISTRY_READERS, 200, path="/discovery/PLANNING_SYSTEM"),
    ("PortalHealthView", "GET"): Rule(None, 200, path="/health"),
    ("SpectacularAPIView", "GET"): Rule(None, 200, path="/api/schema"),
    ("SpectacularSwaggerSplitView", "GET"): Rule(None, 200, path="/api/docs"),
    ("SpectacularRedocView", "GET"): Rule(None, 200, path="/api/redoc"),
    ("json_page_not_found", "GET"): Rule(None, 404, path="/api/nope"),  # the API prefixes' catch-all
    ("metrics_view", "GET"): Rule({"metrics"}, 200, path="/metrics"),
    ("PrometheusSdView", "GET"): Rule({"metrics"}, 200, path="/registry/prometheus-sd"),
    ("RunListView", "GET"): Rule(RUN_READERS, 200, path="/workflows/runs"),
    ("RunListView", "POST"): Rule(RUN_ACTORS, 201, path="/workflows/runs",
                                  body={"workflow": "test_human", "input": {}}),
    ("RunDetailView", "GET"): Rule(RUN_READERS, 200, owned="run", everyone={"runs:read:all", "workflows:operate"},
                                   not_owner=404, path=RUN),
    # The run waits on a human step: a retry is refused for its state (409) once access is granted.
    ("RunRetryView", "POST"): Rule(RUN_ACTORS, 409, owned="run", everyone={"workflows:operate"}, not_owner=404,
                                   path=RUN + "/retry", body={}),
    ("RunCancelView", "POST"): Rule(RUN_ACTORS, 200, owned="run", everyone={"workflows:operate"}, not_owner=404,
                                    path=RUN + "/cancel", body={}),
    ("RunSignalView", "POST"): Rule(RUN_ACTORS, 200, owned="run", everyone={"workflows:operate"}, not_owner=404,
                                    path=RUN + "/signal", body={"data": {"ok": True}}),
    ("DefinitionListView", "GET"): Rule(RUN_READERS | REGISTRY_READERS, 200, path="/workflows/definitions"),
    ("ReadinessView", "GET"): Rule(RUN_READERS | REGISTRY_READERS | {"metrics"}, 200, path="/workflows/readiness"),
    # The Consul-compatible read API: registry:read or metrics (Prometheus' Consul SD uses a metrics key).
    ("agent_self_view", "GET"): Rule(REGISTRY_READERS | {"metrics"}, 200, path="/v1/agent/self"),
    ("catalog_services_view", "GET"): Rule(REGISTRY_READERS | {"metrics"}, 200, path="/v1/catalog/services"),
    ("catalog_service_view", "GET"): Rule(REGISTRY_READERS | {"metrics"}, 200,
                                          path="/v1/catalog/service/PLANNING_SYSTEM"),
    ("health_service_view", "GET"): Rule(REGISTRY_READERS | {"metrics"}, 200,
                                         path="/v1/health/service/planning-system"),
    ("health_state_view", "GET"): Rule(REGISTRY_READERS | {"metrics"}, 200, path="/v1/health/state/any"),
}
# The gateway forwards every method; "owner" here means the type is on the key's allow-list.
# Access granted shows as 404: no TOOL_INTEGRATION instance is registered.
for _method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
    RULES[("GatewayView", _method)] = Rule({"gateway"}, 404, owned="gateway", path="/gateway/TOOL_INTEGRATION/x",
                                           body={} if _method in ("POST", "PUT", "PATCH") else None)

# Function views (no DRF class to read methods from): their methods, named here.
FUNCTION_VIEWS = {"metrics_view": ("GET",), "json_page_not_found": ("GET",),
                  "agent_self_view": ("GET",), "catalog_services_view": ("GET",),
                  "catalog_service_view": ("GET",), "health_service_view": ("GET",), "health_state_view": ("GET",)}


def _walk(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            route = prefix + str(entry.pattern)
            if route.startswith("admin/"):
                continue  # the Django admin: its own login and permissions, tested elsewhere
            yield from _walk(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.callback


def url_conf_endpoints() -> set[tuple[str, str]]:
    """(view name, method) for every non-admin route in the URL conf (slash twins are one view)."""
    found = set()
    for _route, callback in _walk(get_resolver().url_patterns):
        cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        if cls is not None:
            assert issubclass(cls, APIView), f"{cls} is not a DRF view: give it a rule and a test"
            methods = [m.upper() for m in cls.http_method_names if m not in ("options", "head") and hasattr(cls, m)]
            found.update((cls.__name__, method) for method in methods)
        else:
            name = callback.__name__
            found.update((name, method) for method in FUNCTION_VIEWS.get(name, ("?",)))
    return found


def test_every_endpoint_has_a_rule():
    endpoints = url_conf_endpoints()
    assert endpoints - set(RULES) == set(), "endpoints without a rule in RULES"
    assert set(RULES) - endpoints == set(), "rules for endpoints that no longer exist"


CASES = [
    (view, method, scope, relation)
    for (view, method), rule in sorted(RULES.items()) if rule.scopes is not None
    for scope in ALL_SCOPES
    for relation in (("owner", "stranger") if rule.owned else ("any",))
]


def _client(plain: str | None) -> APIClient:
    client = APIClient()
    if plain:
        client.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
    return client


def _waiting_run(owner: ApiKey | None) -> WorkflowRun:
    """A test_human run waiting for its answer (set up directly: no worker in this module)."""
    run, _ = run_start(workflow="test_human", input={}, triggered_by="matrix", owner_key=owner)
    run.steps.filter(index=0).update(status=StepStatus.SUCCEEDED, output={"prepared": True})
    run.steps.filter(index=1).update(status=StepStatus.WAITING, wait_until=timezone.now() + timedelta(minutes=5))
    WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.WAITING)
    return run


def _call(view: str, method: str, scope: str, relation: str):
    rule = RULES[(view, method)]
    caller, plain = api_key_create(name="caller", scopes=[scope],
                                   gateway_allow=["TOOL_INTEGRATION:*"] if relation == "owner" else ["X:GET"])
    other, _ = api_key_create(name="other", scopes=["registry:write", "workflows"])
    owner = caller if relation in ("owner", "any") else other
    service = Service.objects.create(
        name=REGISTRATION["name"], type="PLANNING_SYSTEM", url=REGISTRATION["url"],
        status=HealthStatus.PASSING, owner=owner,
    )
    run = _waiting_run(owner)
    path = rule.path.format(service=service.pk, run=run.pk)
    response = getattr(_client(plain), method.lower())(path, rule.body, format="json")
    return rule, response, service, run


@pytest.mark.parametrize(("view", "method", "scope", "relation"), CASES,
                         ids=[f"{m} {v} {s} {r}" for v, m, s, r in CASES])
def test_each_scope_opens_exactly_its_endpoints_and_owned_things(db, view, method, scope, relation):
    rule, response, service, run = _call(view, method, scope, relation)
    if scope not in rule.scopes:
        assert response.status_code == 403, response.content
        assert response.json()["code"] == "permission_denied"
        assert scope not in response.json()["detail"]  # names the scope that is missing, not the one held
    elif relation == "stranger" and scope not in rule.everyone:
        assert response.status_code == rule.not_owner, response.content
        if rule.owned == "service":  # unchanged
            fresh = Service.objects.get(pk=service.pk)
            assert (fresh.status, fresh.tags) == (HealthStatus.PASSING, [])
        if rule.owned == "run":
            assert WorkflowRun.objects.get(pk=run.pk).status == RunStatus.WAITING
    else:
        assert response.status_code == rule.ok, response.content


def test_the_run_list_shows_a_key_its_own_runs_unless_it_reads_all(db):
    mine_key, mine = api_key_create(name="mine", scopes=["runs:read"])
    _, everything = api_key_create(name="all", scopes=["runs:read:all"])
    own = _waiting_run(mine_key)
    foreign = _waiting_run(None)
    ids = [r["id"] for r in _client(mine).get("/workflows/runs").json()["results"]]
    assert ids == [str(own.pk)]
    ids = {r["id"] for r in _client(everything).get("/workflows/runs").json()["results"]}
    assert ids == {str(own.pk), str(foreign.pk)}


PUBLIC = [(view, method) for (view, method), rule in sorted(RULES.items()) if rule.scopes is None]


@pytest.mark.parametrize(("view", "method"), PUBLIC, ids=[f"{m} {v}" for v, m in PUBLIC])
def test_public_endpoints_need_no_key(db, view, method):
    rule = RULES[(view, method)]
    assert getattr(APIClient(), method.lower())(rule.path).status_code in (rule.ok, 503)


# The Consul-compatible API answers every token problem with 403, as Consul does (tested below).
GUARDED = [(view, method) for (view, method), rule in sorted(RULES.items())
           if rule.scopes is not None and not rule.path.startswith("/v1/")]
GUARDED_IDS = [f"{m} {v}" for v, m in GUARDED]
CONSUL = [(view, method) for (view, method), rule in sorted(RULES.items()) if rule.path.startswith("/v1/")]


def _guarded_call(view, method, plain):
    rule = RULES[(view, method)]
    run = _waiting_run(None)
    service = Service.objects.create(name="x", type="PLANNING_SYSTEM", url="http://127.0.0.1:9009")
    return getattr(_client(plain), method.lower())(rule.path.format(service=service.pk, run=run.pk),
                                                   rule.body, format="json")


@pytest.mark.parametrize(("view", "method"), GUARDED, ids=GUARDED_IDS)
def test_anonymous_callers_get_401(db, view, method):
    response = _guarded_call(view, method, None)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Authentication credentials were not provided.", "code": "not_authenticated",
    }
    assert response["WWW-Authenticate"].startswith("Token")


@pytest.mark.parametrize(("view", "method"), GUARDED, ids=GUARDED_IDS)
def test_an_unknown_key_gets_401(db, view, method):
    response = _guarded_call(view, method, "bp_not-a-real-key")
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid API key."


@pytest.mark.parametrize(("view", "method"), GUARDED, ids=GUARDED_IDS)
def test_a_revoked_key_gets_401(db, view, method):
    key, plain = api_key_create(name="old", scopes=ALL_SCOPES)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    response = _guarded_call(view, method, plain)
    assert response.status_code == 401
    assert response.json()["detail"] == "API key has been revoked."


@pytest.mark.parametrize(("view", "method"), GUARDED, ids=GUARDED_IDS)
def test_an_expired_key_gets_401(db, view, method):
    _, plain = api_key_create(name="late", scopes=ALL_SCOPES, expires_at=timezone.now() - timedelta(seconds=1))
    response = _guarded_call(view, method, plain)
    assert response.status_code == 401
    assert response.json()["detail"] == "API key has expired."


@pytest.mark.parametrize(("view", "method"), CONSUL, ids=[f"{m} {v}" for v, m in CONSUL])
@pytest.mark.parametrize("problem", ["none", "unknown", "revoked", "expired"])
def test_consul_endpoints_answer_403_to_every_token_problem(db, view, method, problem):
    plain = {"none": None, "unknown": "bp_not-a-real-key"}.get(problem)
    if plain is None and problem in ("revoked", "expired"):
        key, plain = api_key_create(name="k", scopes=ALL_SCOPES)
        change = {"revoked_at": timezone.now()} if problem == "revoked" else {
            "expires_at": timezone.now() - timedelta(seconds=1)}
        ApiKey.objects.filter(pk=key.pk).update(**change)
    response = _guarded_call(view, method, plain)
    assert response.status_code == 403
    assert response.json()["code"] == "not_authenticated"
    assert "X-Consul-Index" not in response


def test_a_malformed_authorization_header_gets_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token two parts")
    response = client.get("/registry/services")
    assert response.status_code == 401
    assert "Malformed Authorization header" in response.json()["detail"]


def test_bearer_works_like_token(db):
    _, plain = api_key_create(name="bearer", scopes=["registry:read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    assert client.get("/registry/services").status_code == 200


@pytest.mark.parametrize("path", ["/health/", "/api/schema/"])
def test_the_trailing_slash_twins_are_public_too(db, path):
    assert APIClient().get(path).status_code in (200, 503)


def test_the_admin_needs_a_login(db):
    response = APIClient().get("/admin/registry/service/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
