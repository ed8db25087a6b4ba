"""Hostile input to the registry, discovery and the gateway: every former 500 is a 400 naming the problem.

The issue's "Crashes on input" list, one regression test each (the workflow API's
are in tests/workflows/test_input_hardening.py), plus the rules behind them:
JSON depth and storable strings at the parser, strict query parameters, dot
segments refused by the gateway, adapter patterns matched in linear time.
"""

from __future__ import annotations

import json
import time

import pytest

from registry.adapters import adapt_request, adapter_cache_clear
from registry.breakers import breaker_forget
from registry.models import HealthStatus, RequestAdapterRule, Service
from registry.paths import gateway_path_check

SERVICES = "/registry/services"


def nested(depth: int, leaf=1) -> str:
    """A JSON text ``depth`` arrays deep (built as text: json.dumps itself would recurse)."""
    return "[" * depth + json.dumps(leaf) + "]" * depth


def post_json(client, path: str, text: str, method: str = "post"):
    return getattr(client, method)(path, data=text.encode(), content_type="application/json")


def registration(**extra) -> dict:
    return {"name": "planner-1", "type": "PLANNING_SYSTEM", "url": "http://127.0.0.1:9", **extra}


def assert_400_naming(response, field: str) -> dict:
    assert response.status_code == 400, (response.status_code, response.content[:300])
    body = response.json()
    assert body["code"] == "invalid" and field in body["errors"], body
    assert field in body["detail"]
    return body


# ----------------------------------------------------------------------------- JSON depth


@pytest.mark.django_db
def test_a_registration_nested_1000_levels_deep_is_a_400_not_a_500(register_client):
    text = json.dumps(registration(metadata={"x": "PLACEHOLDER"})).replace('"PLACEHOLDER"', nested(1000))
    response = post_json(register_client, SERVICES, text)
    body = assert_400_naming(response, "body")
    assert "API_MAX_JSON_DEPTH" in body["detail"]
    assert not Service.objects.exists()


@pytest.mark.django_db
def test_a_body_too_deep_for_pythons_own_decoder_is_a_400(register_client):
    # 100,000 levels: json.loads itself raises RecursionError; still a 400.
    response = post_json(register_client, SERVICES, nested(100_000))
    assert response.status_code == 400 and "API_MAX_JSON_DEPTH" in response.json()["detail"]
    # Malformed bracketing is the decoder's to report, not a depth error.
    assert post_json(register_client, SERVICES, "[" * 100 + "}" * 100).json()["code"] == "parse_error"


@pytest.mark.django_db
def test_the_depth_limit_is_a_setting(register_client, settings):
    settings.API_MAX_JSON_DEPTH = 3
    # Depth 3 passes the parser (the view then answers with its own validation).
    ok = post_json(register_client, SERVICES, json.dumps(registration(metadata={"a": {"b": 1}})))
    assert ok.status_code == 201, ok.content
    too_deep = post_json(register_client, SERVICES, json.dumps(registration(metadata={"a": {"b": {"c": 1}}})))
    assert_400_naming(too_deep, "body")


@pytest.mark.django_db
def test_the_gateway_refuses_500_levels_before_calling_the_service(full_client, loopback):
    upstream = loopback()
    service = Service.objects.create(name="pc", type="PROJECT_COORDINATOR", url=upstream.url,
                                     status=HealthStatus.PASSING)
    breaker_forget(service_id=service.pk)
    response = post_json(full_client, "/gateway/PROJECT_COORDINATOR/projects", json.dumps({"p": "X"}).replace(
        '"X"', nested(500)))
    assert response.status_code == 400, response.content[:300]
    assert "API_MAX_JSON_DEPTH" in response.json()["detail"]
    assert upstream.hits == []


# ----------------------------------------------------------------------------- NUL and lone surrogates


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ('{"version": "1\\u0000"}', "metadata.version", "NUL"),
        ('{"version": "\\ud800"}', "metadata.version", "surrogate"),
        ('{"ok\\u0000": 1}', "metadata.ok\\u0000", "NUL"),
        ('{"v": ["a", {"deep": "\\udfff"}]}', "metadata.v[1].deep", "surrogate"),
    ],
)
def test_nul_and_lone_surrogates_anywhere_in_a_registration_are_a_400_naming_the_place(
    register_client, text, field, message
):
    body = json.dumps(registration(metadata={})).replace("{}", text)
    response = post_json(register_client, SERVICES, body)
    assert message in assert_400_naming(response, field)["errors"][field][0]
    assert not Service.objects.exists()


@pytest.mark.django_db
def test_the_gateway_refuses_nul_in_a_body_naming_it_before_calling_the_service(full_client, loopback):
    upstream = loopback()
    service = Service.objects.create(name="pc", type="PROJECT_COORDINATOR", url=upstream.url,
                                     status=HealthStatus.PASSING)
    breaker_forget(service_id=service.pk)
    response = post_json(full_client, "/gateway/PROJECT_COORDINATOR/projects", '{"name": "a\\u0000"}')
    assert_400_naming(response, "name")
    assert upstream.hits == []


@pytest.mark.django_db
def test_a_valid_surrogate_pair_and_other_escapes_are_accepted(register_client):
    body = json.dumps(registration(metadata={"emoji": "\U0001f600", "tab": "a\tb", "u": "\u00e9"}))
    assert "\\ud83d\\ude00" in body  # json.dumps escapes it as a pair: the walk runs, and passes
    response = post_json(register_client, SERVICES, body)
    assert response.status_code == 201, response.content
    assert Service.objects.get().metadata == {"emoji": "\U0001f600", "tab": "a\tb", "u": "\u00e9"}


@pytest.mark.django_db
def test_the_registry_admin_form_applies_the_same_rule(admin_client):
    service = Service.objects.create(name="pc", type="PROJECT_COORDINATOR", url="http://127.0.0.1:9")
    url = f"/admin/registry/service/{service.pk}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data["metadata"] = '{"v": "\\u0000"}'
    response = admin_client.post(url, data)
    assert response.status_code == 200  # the form again, with the error
    assert "NUL" in str(response.context["adminform"].form.errors["metadata"])
    service.refresh_from_db()
    assert service.metadata == {}


# ----------------------------------------------------------------------------- query parameters


@pytest.mark.django_db
def test_a_misspelt_filter_on_the_service_list_is_a_400_naming_it(read_client):
    Service.objects.create(name="a", type="PLANNING_SYSTEM", url="http://127.0.0.1:9")
    response = read_client.get(SERVICES, {"stauts": "critical"})
    body = assert_400_naming(response, "stauts")
    assert "status" in body["errors"]["stauts"][0]  # the message lists the accepted names


@pytest.mark.django_db
def test_unknown_repeated_and_invalid_parameters_are_reported_together(read_client):
    response = read_client.get(f"{SERVICES}?status=passing&status=critical&colour=red&page=abc")
    body = response.json()
    assert response.status_code == 400
    assert set(body["errors"]) == {"status", "colour", "page"}


@pytest.mark.django_db
def test_documented_filters_pagination_and_repeats_still_work(read_client):
    Service.objects.create(name="a", type="PLANNING_SYSTEM", url="http://127.0.0.1:9", tags=["x", "y"])
    Service.objects.create(name="b", type="PLANNING_SYSTEM", url="http://127.0.0.1:8", tags=["x"])
    response = read_client.get(f"{SERVICES}?tag=x&tag=y&type=PLANNING_SYSTEM&page=1&page_size=10")
    assert response.status_code == 200
    assert [s["name"] for s in response.json()["results"]] == ["a"]


@pytest.mark.django_db
def test_discovery_and_detail_refuse_unknown_parameters(read_client):
    service = Service.objects.create(name="a", type="PLANNING_SYSTEM", url="http://127.0.0.1:9",
                                     status=HealthStatus.PASSING)
    assert_400_naming(read_client.get("/discovery/PLANNING_SYSTEM?al=1"), "al")
    assert read_client.get("/discovery/PLANNING_SYSTEM?all=1").status_code == 200
    assert_400_naming(read_client.get(f"{SERVICES}/{service.pk}?verbose=1"), "verbose")


# ----------------------------------------------------------------------------- gateway paths

TRAVERSALS = [
    "../internal-admin/secret",
    "..%2finternal-admin",
    "..%2Finternal-admin",
    "%2e%2e/internal-admin",
    "%2E%2E%2Finternal-admin",
    ".%2e/internal-admin",
    "%252e%252e/internal-admin",  # double-encoded
    "%25252e%25252e%25252finternal-admin",  # triple
    "..%5cinternal-admin",  # backslash
    "projects/..%5c..%5cinternal-admin",
    "projects/..;/internal-admin",  # servlet path parameter
    "projects/.%00/x",
    "projects/\uff0e\uff0e/x",  # full-width dots (NFKC: ..)
    "projects/./x",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_the_path_rule_refuses_dot_segments_in_every_spelling(path):
    from berrys_portal.errors import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        gateway_path_check(path)
    assert "path" in caught.value.errors


@pytest.mark.parametrize("path", ["projects/1", "projects/a.b", "files/...", "a/%20b", "a/%ff", "v1.2/x..y"])
def test_the_path_rule_lets_ordinary_paths_through(path):
    gateway_path_check(path)


@pytest.mark.django_db
@pytest.mark.parametrize("raw", ["..%2finternal-admin", "%252e%252e/internal-admin", "..%5cinternal-admin",
                                 "x/%2e%2e/%2e%2e/internal-admin"])
def test_the_gateway_refuses_escaping_its_services_base_path(full_client, loopback, raw):
    from tests.registry.loopback import Reply

    upstream = loopback({"/internal-admin": Reply(200, {"secret": "s3cr3t"})})
    service = Service.objects.create(name="pc", type="PROJECT_COORDINATOR", url=upstream.url + "/api",
                                     status=HealthStatus.PASSING)
    breaker_forget(service_id=service.pk)
    # The test client passes the path as the server would after one round of decoding.
    from urllib.parse import unquote

    response = full_client.get("/gateway/PROJECT_COORDINATOR/" + unquote(raw))
    assert_400_naming(response, "path")
    assert upstream.hits == []


# ----------------------------------------------------------------------------- adapter patterns


@pytest.fixture
def fresh_rules():
    adapter_cache_clear()
    yield
    adapter_cache_clear()


@pytest.mark.django_db
def test_a_pathological_adapter_pattern_matches_in_linear_time(fresh_rules):
    # With Python's re this took 5.6 s at 27 characters, doubling per character.
    RequestAdapterRule.objects.create(service_type="PLANNING_SYSTEM", method="*", pattern_type="regex",
                                      endpoint_pattern="/(a+)+b", action="drop", field="x")
    path = "/" + "a" * 5000 + "!"
    started = time.monotonic()
    for _ in range(20):
        out = adapt_request(service_type="PLANNING_SYSTEM", method="POST", endpoint=path, data={"x": 1})
    assert out == {"x": 1}
    assert time.monotonic() - started < 0.5
    assert adapt_request(service_type="PLANNING_SYSTEM", method="POST", endpoint="/aaab",
                         data={"x": 1}) == {}


@pytest.mark.django_db
@pytest.mark.parametrize("pattern", [r"/(\w+)/\1", r"/(?=projects).*", r"/(?<!x)y", r"/a++"])
def test_the_admin_form_refuses_patterns_re2_cannot_match_in_linear_time(admin_client, pattern):
    response = admin_client.post("/admin/registry/requestadapterrule/add/", {
        "service_type": "PLANNING_SYSTEM", "method": "*", "endpoint_pattern": pattern, "pattern_type": "regex",
        "order": 100, "action": "drop", "field": "x", "value": "", "enabled": "on", "description": "",
    })
    assert response.status_code == 200  # the form again
    errors = response.context["adminform"].form.errors
    assert "linear time" in str(errors["endpoint_pattern"])
    assert not RequestAdapterRule.objects.filter(endpoint_pattern=pattern).exists()


@pytest.mark.django_db
def test_globs_keep_their_meaning_under_re2(fresh_rules):
    RequestAdapterRule.objects.create(service_type="PLANNING_SYSTEM", method="POST", endpoint_pattern="/plans/[!x]?/*",
                                      action="drop", field="x")
    adapt = lambda path: adapt_request(service_type="PLANNING_SYSTEM", method="POST", endpoint=path,  # noqa: E731
                                       data={"x": 1})
    assert adapt("/plans/ab/c/d") == {}
    assert adapt("/plans/xb/c") == {"x": 1}
    assert adapt("/plans/abc/d") == {"x": 1}
    assert adapt("/plans/ab/") == {}


@pytest.mark.django_db
def test_a_service_answering_json_nested_5000_deep_is_passed_on_as_text_not_a_500(full_client, loopback):
    from tests.registry.loopback import Reply

    deep = "[" * 5000 + "]" * 5000
    upstream = loopback({"/x": Reply(200, deep)})
    service = Service.objects.create(name="pc", type="PROJECT_COORDINATOR", url=upstream.url,
                                     status=HealthStatus.PASSING)
    breaker_forget(service_id=service.pk)
    response = full_client.get("/gateway/PROJECT_COORDINATOR/x")
    assert response.status_code == 200
    assert response.json() == deep  # the service's bytes, as a string: never decoded


@pytest.mark.django_db
def test_literal_globs_and_rules_sharing_a_pattern_still_apply_each_rule(fresh_rules):
    for order, field in enumerate(("a", "b", "c")):
        RequestAdapterRule.objects.create(service_type="PLANNING_SYSTEM", method="POST", endpoint_pattern="/plans",
                                          order=order, action="drop", field=field)
    RequestAdapterRule.objects.create(service_type="PLANNING_SYSTEM", method="*", endpoint_pattern="/plans/*",
                                      order=9, action="drop", field="d")
    body = {"a": 1, "b": 2, "c": 3, "d": 4}
    adapt = lambda path, method="POST": adapt_request(  # noqa: E731
        service_type="PLANNING_SYSTEM", method=method, endpoint=path, data=body)
    assert adapt("/plans") == {"d": 4}
    assert adapt("/plans/") == {"a": 1, "b": 2, "c": 3}
    assert adapt("/plans/x", method="GET") == {"a": 1, "b": 2, "c": 3}
    assert adapt("/plansx") == body and adapt("/Plans") == body


@pytest.mark.parametrize("answer", ["ok\u0000", "\ud800", float("nan")], ids=["nul", "surrogate", "nan"])
def test_a_health_answer_holding_nul_does_not_stop_the_sweep_for_everyone(loopback, make_service, answer):
    """The sweep stores each answer's details: one the database cannot hold (PostgreSQL's jsonb
    refuses NUL, lone surrogates, NaN) used to fail the whole batch's write."""
    from tests.registry.loopback import Reply

    server = loopback({"/nul": Reply(200, {"status": answer, "database": answer}),
                       "/ok": Reply(200, {"status": "healthy"})})
    odd = make_service(url=server.url, health_path="/nul")
    healthy = make_service(url=server.url, health_path="/ok")
    from registry import health

    health.health_sweep()
    healthy.refresh_from_db()
    odd.refresh_from_db()
    assert healthy.status == "passing"
    assert odd.status in ("passing", "warning") and odd.last_checked_at is not None
    assert odd.snapshots.exists()
