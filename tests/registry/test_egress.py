"""The egress policy: the deny list over every spelling, DNS rebinding through the resolver
seam, and a hostile upstream driven through the prober, the ServiceClient, the gateway and a
workflow step. Everything runs on loopback; 127.0.0.2 stands in for a metadata service."""

from __future__ import annotations

import ipaddress
import resource
import time

import pytest
from django.conf import settings as django_settings

from berrys_portal.errors import ServiceConnectionError
from registry import egress, health
from registry.breakers import breaker_forget
from registry.client import ServiceClient, UnusableAnswerError
from registry.gateway import gateway_slot
from registry.models import HealthSnapshot, Service
from tests.registry.hostile import Hostile, Metadata, banner_server, black_hole

LOOPBACK_ONE = [ipaddress.ip_network("127.0.0.1/32")]


@pytest.fixture
def strict(settings):
    """The production shape: only 127.0.0.1 allowed (listed), loopback otherwise refused."""
    settings.REGISTRY_ALLOWED_NETWORKS = LOOPBACK_ONE
    settings.EGRESS_ALLOW_LOOPBACK = False
    return settings


@pytest.fixture
def metadata():
    server = Metadata()
    yield server
    server.close()


@pytest.fixture
def hostile(metadata):
    server = Hostile(metadata=metadata)
    yield server
    server.close()


def _register(client, url: str):
    return client.post("/registry/services", {"name": "x", "type": "PLANNING_SYSTEM", "url": url},
                       format="json")


# --- the deny list, every spelling ------------------------------------------------------------

DENIED = [
    ("http://0.0.0.0:80", "this network"),
    ("http://[::]:80", "unspecified"),
    ("http://127.1:80", "loopback"),
    ("http://[::1]:80", "loopback"),
    ("http://localhost:80", "loopback"),
    ("http://metadata.google.internal", "metadata host name"),
    ("http://metadata.google.internal.", "metadata host name"),
    ("http://metadata", "metadata host name"),
    ("http://instance-data", "metadata host name"),
    ("http://[fd00:ec2::254]", "unique local"),
    ("http://100.100.100.200", "shared address space"),
    ("http://[64:ff9b::169.254.169.254]", "link-local"),
    ("http://[64:ff9b::127.0.0.1]", "loopback"),
    ("http://[::ffff:169.254.169.254]", "link-local"),
    ("http://[::ffff:127.0.0.1]", "loopback"),
    ("http://[2002:a9fe:a9fe::1]", "link-local"),  # 6to4 of 169.254.169.254
    ("http://[::169.254.169.254]", "link-local"),  # IPv4-compatible
    ("http://169.254.169.254", "link-local"),
    ("http://2852039166", "link-local"),
    ("http://0xa9.0xfe.0xa9.0xfe", "link-local"),
    ("http://169.254.169.254.", "link-local"),
    ("http://[fe80::1]", "link-local"),
    ("http://224.0.0.1", "multicast"),
    ("http://[ff02::1]", "multicast"),
    ("http://255.255.255.255", "broadcast"),
]


@pytest.mark.parametrize(("url", "reason"), DENIED)
def test_registration_refuses_every_spelling_of_a_denied_address(register_client, settings, url, reason):
    settings.EGRESS_ALLOW_LOOPBACK = False
    response = _register(register_client, url)
    assert response.status_code == 400, response.json()
    message = response.json()["errors"]["url"][0]
    assert reason in message, message


@pytest.mark.parametrize(("url", "reason"), [d for d in DENIED if d[1] != "loopback"])
def test_the_always_denied_list_is_never_overridden(register_client, settings, url, reason):
    settings.EGRESS_ALLOW_LOOPBACK = True
    settings.REGISTRY_ALLOWED_NETWORKS = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    response = _register(register_client, url)
    assert response.status_code == 400 and reason in response.json()["errors"]["url"][0]


def test_a_loopback_network_listed_in_the_allow_list_is_allowed_and_only_it(register_client, strict):
    assert _register(register_client, "http://127.0.0.1:8001").status_code == 201
    assert _register(register_client, "http://127.1:8001").status_code == 201  # the same address
    refused = _register(register_client, "http://127.0.0.2:8001")
    assert refused.status_code == 400 and "loopback" in refused.json()["errors"]["url"][0]


def test_the_portal_itself_is_refused(register_client, settings):
    settings.EGRESS_ALLOW_LOOPBACK = True
    response = _register(register_client, f"http://127.0.0.1:{settings.PORTAL_PORT}")
    assert response.status_code == 400
    assert "the portal itself" in response.json()["errors"]["url"][0]
    assert _register(register_client, f"http://127.0.0.1:{settings.PORTAL_PORT + 1}").status_code == 201


def test_a_name_is_refused_when_any_of_its_addresses_is(register_client, strict):
    answers = {"mixed.example": ["127.0.0.1", "169.254.169.254"], "fine.example": ["127.0.0.1"]}
    with egress.resolver_use(lambda host, port: answers[host]):
        refused = _register(register_client, "http://mixed.example:8001")
        assert refused.status_code == 400
        assert "resolves to 169.254.169.254" in refused.json()["errors"]["url"][0]
        assert _register(register_client, "http://fine.example:8001").status_code == 201


def test_production_settings_name_the_allow_list(settings):
    assert django_settings.EGRESS_ALLOW_LOOPBACK is True  # the test profile allows loopback


# --- DNS rebinding --------------------------------------------------------------------------------


class Rebinder:
    """What ``svc.example`` resolves to, switched by the test between registration and connect."""

    def __init__(self) -> None:
        self.answer = "127.0.0.1"
        self.asked = 0

    def __call__(self, host: str, port: int) -> list[str]:
        assert host == "svc.example"
        self.asked += 1
        return [self.answer]


def test_a_name_rebound_to_a_denied_address_after_registration_is_refused_at_connect_time(
        register_client, strict, hostile, metadata, make_service):
    rebinder = Rebinder()
    with egress.resolver_use(rebinder):
        response = register_client.post("/registry/services", {
            "name": "rebinder", "type": "HOSTILE_UPSTREAM", "url": f"http://svc.example:{hostile.port}",
            "health_url": f"http://svc.example:{hostile.port}/ok"}, format="json")
        assert response.status_code == 201, response.json()
        svc = Service.objects.get(name="rebinder")

        rebinder.answer = "127.0.0.2"  # the metadata stand-in
        with pytest.raises(ServiceConnectionError, match="egress policy"):
            ServiceClient().request("GET", service=svc, endpoint="/ok", retries=0)
        health.health_check_now(service_ids=[svc.pk])
        svc.refresh_from_db()
        assert (svc.status, svc.status_reason) == ("critical", "denied by egress policy")
        assert "127.0.0.2" in HealthSnapshot.objects.filter(service=svc).latest("checked_at").error
        assert metadata.connections == 0

        rebinder.answer = "127.0.0.1"
        breaker_forget(service_id=svc.pk)  # the critical probe opened it
        result = ServiceClient().request("GET", service=svc, endpoint="/ok", retries=0)
        assert result.status == 200
    # The vetted address was used, and the name was sent as Host.
    assert any(f"Host: svc.example:{hostile.port}".encode() in head for head in hostile.heads)
    assert rebinder.asked >= 3  # registration, the probe, each call: a lookup every time


# --- the hostile upstream through the prober --------------------------------------------------------


def test_the_prober_never_follows_redirects_and_shows_read_keys_only_categories(
        strict, hostile, metadata, make_service, read_client):
    banner, hole = banner_server(), black_hole()
    try:
        services = {
            "redirect": make_service(url=hostile.url(), health_path="/redirect"),
            "redirect-auth": make_service(url=hostile.url(), health_path="/redirect-auth"),
            "drip": make_service(url=hostile.url(), health_path="/drip", check_timeout_seconds=1),
            "bomb": make_service(url=hostile.url(), health_path="/gzip-bomb"),
            "huge": make_service(url=hostile.url(), health_path="/huge"),
            "banner": make_service(url=banner.url(), health_path="/health"),
            "hole": make_service(url=hole.url(), health_path="/health", check_timeout_seconds=1),
            "stored-long-timeout": make_service(url=hole.url(), health_path="/h2", check_timeout_seconds=300),
            "metadata": make_service(url=metadata.url(), health_path="/latest"),
        }
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        health.health_check_now(service_ids=[s.pk for s in services.values()])
        elapsed = time.monotonic() - started
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    finally:
        banner.close()
        hole.close()
    reasons = {name: Service.objects.get(pk=s.pk).status_reason for name, s in services.items()}
    assert reasons["redirect"] == "redirected to 127.0.0.2"
    assert reasons["redirect-auth"] == "redirected to 127.0.0.1"
    assert reasons["drip"] == "timed out after 1 s"
    assert reasons["banner"] == "not HTTP"
    assert reasons["hole"] == "timed out after 1 s"
    # A row stored before the bound existed is clamped when probed (HEALTH_MAX_TIMEOUT_SECONDS).
    assert reasons["stored-long-timeout"] == f"timed out after {django_settings.HEALTH_MAX_TIMEOUT_SECONDS:g} s"
    assert reasons["metadata"] == "denied by egress policy"
    # The bomb and the huge body answered 200: read up to the cap, no more.
    assert Service.objects.get(pk=services["bomb"].pk).status == "passing"
    assert Service.objects.get(pk=services["huge"].pk).status == "passing"
    assert elapsed < django_settings.HEALTH_MAX_TIMEOUT_SECONDS + 3
    assert grown_mb < 50, f"peak memory grew by {grown_mb:.0f} MB"
    assert metadata.connections == 0
    assert not any(b"Authorization" in head for head in hostile.heads)
    # What a read key sees: categories, never the peer's bytes.
    listed = read_client.get("/registry/services?page_size=100").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    shown = " ".join(r["status_reason"] for r in rows)
    assert "SSH" not in shown and "OpenSSH" not in shown
    detail = read_client.get(f"/registry/services/{services['banner'].pk}").json()
    assert detail["status_reason"] == "not HTTP"
    # The raw detail stays in the staff-only snapshot.
    assert "SSH-2.0" in HealthSnapshot.objects.get(service=services["banner"]).error


# --- the hostile upstream through the ServiceClient ---------------------------------------------


@pytest.fixture
def upstream(strict, hostile, make_service):
    return make_service(url=hostile.url(), type="HOSTILE_UPSTREAM", health_path="/ok")


def _call(svc, path: str, **kw):
    return ServiceClient().request("GET", service=svc, endpoint=path, retries=0, **kw)


def test_the_client_answers_a_redirect_with_an_error_and_never_follows_it(upstream, metadata):
    with pytest.raises(UnusableAnswerError, match="redirect .HTTP 302 to 127.0.0.2"):
        _call(upstream, "/redirect")
    assert metadata.connections == 0


@pytest.mark.parametrize("path", ["/not-modified", "/switching"])
def test_interim_and_not_modified_answers_are_errors(upstream, path):
    with pytest.raises(UnusableAnswerError):
        _call(upstream, path)


def test_a_dripping_upstream_is_cut_at_the_total_deadline(upstream):
    started = time.monotonic()
    with pytest.raises(ServiceConnectionError, match="timeout"):
        _call(upstream, "/drip", timeout=1.5)
    assert 1.4 < time.monotonic() - started < 4.5  # a per-read timeout would never fire here


@pytest.mark.parametrize("path", ["/gzip-bomb", "/huge"])
def test_a_body_over_the_cap_after_decompression_is_an_error_that_says_so(upstream, path):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(ServiceConnectionError, match="larger than 1048576 bytes .after decompression"):
        _call(upstream, path)
    assert time.monotonic() - started < 3
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024 < 50


def test_a_banner_that_is_not_http_is_a_connection_error(strict, make_service):
    banner = banner_server()
    try:
        svc = make_service(url=banner.url(), type="HOSTILE_UPSTREAM")
        with pytest.raises(ServiceConnectionError) as caught:
            _call(svc, "/x")
        # The error a caller (a gateway key, a run's attempts) sees never quotes the banner.
        assert "SSH" not in str(caught.value) and "SSH" not in caught.value.call.error
    finally:
        banner.close()


def test_a_black_hole_is_cut_at_the_deadline(strict, make_service):
    hole = black_hole()
    try:
        svc = make_service(url=hole.url(), type="HOSTILE_UPSTREAM")
        started = time.monotonic()
        with pytest.raises(ServiceConnectionError, match="timeout"):
            _call(svc, "/x", timeout=1.0)
        assert time.monotonic() - started < 2.5
    finally:
        hole.close()


def test_credentials_in_a_service_url_are_never_sent(strict, hostile, make_service):
    svc = make_service(url=f"http://user:pass@127.0.0.1:{hostile.port}", type="HOSTILE_UPSTREAM")
    with pytest.raises(ServiceConnectionError, match="credentials"):
        _call(svc, "/ok")
    assert hostile.heads == []


# --- the hostile upstream through the gateway ---------------------------------------------------


@pytest.fixture
def gateway_upstream(upstream):
    Service.objects.filter(pk=upstream.pk).update(status="passing", breaker_call_timeout_seconds=1.5)
    return upstream


def test_the_gateway_answers_hostile_upstreams_in_the_error_shape(full_client, gateway_upstream, metadata):
    redirected = full_client.get("/gateway/HOSTILE_UPSTREAM/redirect")
    assert redirected.status_code == 502 and redirected.json()["code"] == "unusable_upstream_answer"
    assert "Location" not in redirected.headers
    assert metadata.connections == 0
    bomb = full_client.get("/gateway/HOSTILE_UPSTREAM/gzip-bomb")
    assert bomb.status_code == 502 and "larger than" in bomb.json()["detail"]
    not_modified = full_client.get("/gateway/HOSTILE_UPSTREAM/not-modified")
    assert not_modified.status_code == 502 and not_modified.json()["code"] == "unusable_upstream_answer"
    started = time.monotonic()
    drip = full_client.get("/gateway/HOSTILE_UPSTREAM/drip")
    assert drip.status_code == 502 and "timeout" in drip.json()["detail"].lower()
    assert time.monotonic() - started < 12  # the deadline (1.5 s) per try, 3 tries with backoff


def test_the_gateway_answers_503_with_retry_after_beyond_its_bounds(full_client, gateway_upstream, settings):
    from registry.models import ApiKey

    settings.GATEWAY_MAX_CONCURRENT_PER_TARGET = 1
    key = ApiKey.objects.get(name="everything")
    with gateway_slot(key_id=key.pk + 1000, service_type="HOSTILE_UPSTREAM"):  # another key's call
        busy = full_client.get("/gateway/HOSTILE_UPSTREAM/ok")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert busy.json()["code"] == "gateway_busy" and "GATEWAY_MAX_CONCURRENT_PER_TARGET" in busy.json()["detail"]
    assert full_client.get("/gateway/HOSTILE_UPSTREAM/ok").status_code == 200  # the slot is free again


# --- the hostile upstream through a workflow step --------------------------------------------------


@pytest.mark.parametrize(("route", "error"), [
    ("redirect", "redirect"), ("drip", "timeout"), ("gzip-bomb", "larger than"), ("not-modified", "HTTP 304"),
])
def test_a_workflow_step_against_a_hostile_upstream_fails_with_a_bounded_error(
        gateway_upstream, metadata, route, error):
    import tests.workflows.definitions  # noqa: F401 - the test workflows
    from workflows.engine import run_start, step_execute
    from workflows.models import StepAttempt

    run, _ = run_start(workflow="test_egress_call", input={"route": route}, triggered_by="test")
    step = run.steps.get()
    started = time.monotonic()
    step_execute(step_id=step.pk)
    assert time.monotonic() - started < 4
    attempt = StepAttempt.objects.get(step=step)
    assert attempt.outcome == "failed" and error in attempt.error, attempt.error
    assert metadata.connections == 0


# --- queues and time limits ---------------------------------------------------------------------


def test_health_and_step_tasks_run_on_separate_queues_with_soft_and_hard_time_limits():
    from celery import current_app

    from registry.tasks import health_check_now_task, health_sweep_task
    from workflows.tasks import run_step

    router = current_app.amqp.router
    assert router.route({}, "registry.health_sweep")["queue"].name == django_settings.HEALTH_QUEUE == "health"
    # A slow alert webhook must not hold up a sweep: the outbox's tasks go elsewhere.
    for name in ("registry.outbox_process", "registry.alert_deliver", "registry.outbox_catch_up"):
        assert router.route({}, name)["queue"].name == django_settings.OUTBOX_QUEUE != django_settings.HEALTH_QUEUE
    assert django_settings.WORKFLOW_QUEUE != django_settings.HEALTH_QUEUE
    for task in (health_sweep_task, health_check_now_task):
        # Below the sweep lock's TTL: a sweep never outlives its lock.
        assert task.soft_time_limit < task.time_limit < django_settings.HEALTH_SWEEP_LOCK_SECONDS
    assert run_step.soft_time_limit < run_step.time_limit
