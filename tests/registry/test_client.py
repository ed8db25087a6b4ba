"""ServiceClient: discovery, breaker, timeouts, retry schedule and typed errors, over real HTTP."""

from __future__ import annotations

import pytest

from berrys_portal.errors import (
    CircuitOpenError,
    NoEligibleServiceError,
    ServiceConnectionError,
    ServiceNotFoundError,
    ServiceResponseError,
)
from registry.breakers import breaker_for
from registry.client import ServiceClient, service_client, service_discovery
from registry.models import HealthStatus
from tests.registry.health_fixtures import free_port
from tests.registry.loopback import Reply, sequence


class RecordingSleep:
    def __init__(self):
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps():
    return RecordingSleep()


@pytest.fixture
def client(sleeps, settings):
    settings.SERVICE_CLIENT_RETRIES = 2
    settings.SERVICE_CLIENT_BACKOFF_BASE_SECONDS = 0.2
    settings.SERVICE_CLIENT_BACKOFF_CAP_SECONDS = 5.0
    return ServiceClient(sleep=sleeps, rand=lambda: 0.999)


def test_a_call_by_type_returns_status_body_timing_and_the_instance(loopback, make_service):
    server = loopback({"/plans": Reply(201, {"id": "p1"})})
    svc = make_service(url=server.url, status=HealthStatus.PASSING)

    result = service_client.post(service="PLANNING_SYSTEM", endpoint="/plans", data={"name": "x"})

    assert (result.status, result.body, result.service.pk) == (201, {"id": "p1"}, svc.pk)
    assert result.latency_ms > 0
    assert result.call.service_name == svc.name and result.call.url == server.url + "/plans"
    assert result.tries == [result.call]
    assert server.hits[0].body == {"name": "x"} and server.hits[0].method == "POST"


def test_get_service_by_type_returns_a_healthy_instance(make_service):
    make_service(status=HealthStatus.CRITICAL, name="down")
    up = make_service(status=HealthStatus.PASSING, name="up")

    assert service_discovery.get_service_by_type("PLANNING_SYSTEM").pk == up.pk


def test_an_unknown_type_raises_service_not_found_without_a_call(make_service):
    with pytest.raises(ServiceNotFoundError) as err:
        service_client.get(service="NOPE_SYSTEM", endpoint="/x")
    assert err.value.call is None and err.value.tries == []


def test_a_type_with_only_critical_instances_raises_no_eligible_service(make_service):
    make_service(status=HealthStatus.CRITICAL)
    with pytest.raises(NoEligibleServiceError) as err:
        service_client.get(service="PLANNING_SYSTEM", endpoint="/x")
    assert err.value.call is None


def test_transient_failures_are_retried_with_full_jitter_backoff(loopback, make_service, client, sleeps):
    server = loopback({"/x": sequence(Reply(503), Reply(502), Reply(200, {"ok": True}))})
    svc = make_service(url=server.url)

    result = client.get(service=svc, endpoint="/x")

    assert result.status == 200 and server.count("/x") == 3
    assert [t.status for t in result.tries] == [503, 502, 200]
    assert [t.attempt for t in result.tries] == [1, 2, 3]
    # Full jitter: delay n is uniform in [0, base * 2**n); rand() = 0.999 puts it just under the cap.
    assert len(sleeps.delays) == 2
    assert 0.19 < sleeps.delays[0] < 0.2 and 0.39 < sleeps.delays[1] < 0.4


def test_jittered_delays_stay_within_bounds_and_respect_the_cap(settings):
    settings.SERVICE_CLIENT_BACKOFF_BASE_SECONDS = 0.2
    settings.SERVICE_CLIENT_BACKOFF_CAP_SECONDS = 1.0
    client = ServiceClient()
    for n in range(8):
        bound = min(1.0, 0.2 * 2**n)
        delays = [client.backoff_delay(n) for _ in range(200)]
        assert all(0 <= d < bound for d in delays)
        assert max(delays) > bound * 0.5  # really spread out, not a constant


def test_a_persistent_503_gives_up_after_the_retries_with_every_try_attached(loopback, make_service, client, sleeps):
    server = loopback({"/x": Reply(503, {"detail": "busy"})})
    svc = make_service(url=server.url, breaker_fail_max=10)

    with pytest.raises(ServiceResponseError) as err:
        client.get(service=svc, endpoint="/x")

    assert server.count("/x") == 3 and len(sleeps.delays) == 2
    assert err.value.status == 503 and err.value.body == {"detail": "busy"}
    assert err.value.call.status == 503 and len(err.value.tries) == 3


@pytest.mark.parametrize("status", [400, 404, 409, 422, 500])
def test_other_error_statuses_are_never_retried(loopback, make_service, client, sleeps, status):
    server = loopback({"/x": Reply(status, {"detail": "no"})})
    svc = make_service(url=server.url)

    with pytest.raises(ServiceResponseError) as err:
        client.get(service=svc, endpoint="/x")

    assert server.count("/x") == 1 and sleeps.delays == []
    assert err.value.status == status and err.value.call.status == status


def test_a_post_is_not_retried_unless_the_caller_says_it_is_idempotent(loopback, make_service, client):
    server = loopback({"/x": Reply(503)})
    svc = make_service(url=server.url, breaker_fail_max=10)

    with pytest.raises(ServiceResponseError):
        client.post(service=svc, endpoint="/x", data={})
    assert server.count("/x") == 1

    with pytest.raises(ServiceResponseError):
        client.post(service=svc, endpoint="/x", data={}, idempotent=True)
    assert server.count("/x") == 1 + 3


def test_retries_zero_means_exactly_one_try(loopback, make_service, client, sleeps):
    server = loopback({"/x": Reply(503)})
    svc = make_service(url=server.url)

    with pytest.raises(ServiceResponseError) as err:
        client.get(service=svc, endpoint="/x", retries=0)
    assert server.count("/x") == 1 and sleeps.delays == [] and len(err.value.tries) == 1


def test_a_refused_connection_raises_service_connection_error_after_retries(make_service, client, sleeps):
    svc = make_service(url=f"http://127.0.0.1:{free_port()}", breaker_fail_max=10)

    with pytest.raises(ServiceConnectionError) as err:
        client.get(service=svc, endpoint="/x")
    assert len(err.value.tries) == 3 and len(sleeps.delays) == 2
    assert "Connection error" in err.value.call.error and err.value.call.status is None


def test_a_timeout_is_transient_and_raises_service_connection_error(loopback, make_service, client):
    server = loopback({"/x": Reply(hang=True)})
    svc = make_service(url=server.url, breaker_fail_max=10)

    with pytest.raises(ServiceConnectionError) as err:
        client.get(service=svc, endpoint="/x", timeout=0.2, retries=1)
    assert server.count("/x") == 2
    assert err.value.call.error.startswith("Timeout")
    assert err.value.call.latency_ms >= 200


def test_an_open_breaker_fails_fast_without_sending(loopback, make_service, client):
    server = loopback({"/x": Reply(200)})
    svc = make_service(url=server.url)
    breaker_for(svc).force_open(reason="test")

    with pytest.raises(CircuitOpenError) as err:
        client.get(service=svc, endpoint="/x")
    assert server.count("/x") == 0 and err.value.call is None and err.value.tries == []


def test_a_call_by_type_skips_an_instance_whose_breaker_is_open(loopback, make_service, client):
    a, b = loopback({"/x": Reply(200, "a")}), loopback({"/x": Reply(200, "b")})
    svc_a = make_service(url=a.url, status=HealthStatus.PASSING)
    make_service(url=b.url, status=HealthStatus.PASSING)
    breaker_for(svc_a).force_open(reason="test")

    bodies = {client.get(service="PLANNING_SYSTEM", endpoint="/x").body for _ in range(4)}
    assert bodies == {"b"} and a.count("/x") == 0


def test_server_errors_trip_the_breaker_after_fail_max(loopback, make_service, client):
    server = loopback({"/x": Reply(500)})
    svc = make_service(url=server.url)  # non-critical preset: fail_max 3

    for _ in range(3):
        with pytest.raises(ServiceResponseError):
            client.get(service=svc, endpoint="/x")
    with pytest.raises(CircuitOpenError):
        client.get(service=svc, endpoint="/x")
    assert server.count("/x") == 3


def test_client_errors_do_not_count_toward_the_breaker(loopback, make_service, client):
    server = loopback({"/x": Reply(404)})
    svc = make_service(url=server.url)

    for _ in range(5):
        with pytest.raises(ServiceResponseError):
            client.get(service=svc, endpoint="/x")
    assert breaker_for(svc).snapshot().state == "closed"


# --- the client's recent view of the registry (SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS) ------------


def _discovery_queries(captured) -> int:
    return sum('FROM "registry_service"' in q["sql"] for q in captured.captured_queries)


def test_the_client_reuses_a_recent_view_of_the_registry_within_max_age(loopback, make_service, settings):
    import time

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS = 0.5
    server = loopback({"/plans": Reply(200, {})})
    svc = make_service(url=server.url, status=HealthStatus.PASSING)
    service_client.get(service="PLANNING_SYSTEM", endpoint="/plans")  # fills the view
    with CaptureQueriesContext(connection) as captured:
        service_client.get(service="PLANNING_SYSTEM", endpoint="/plans")
    assert _discovery_queries(captured) == 0

    # Another process takes the service out (plain SQL: no signal reaches this one).
    with connection.cursor() as cursor:
        cursor.execute("UPDATE registry_service SET status = 'maintenance' WHERE id = %s", [svc.pk])
    service_client.get(service="PLANNING_SYSTEM", endpoint="/plans")  # still within max_age
    time.sleep(0.6)
    with pytest.raises(NoEligibleServiceError):
        service_client.get(service="PLANNING_SYSTEM", endpoint="/plans")


def test_a_change_made_in_this_process_or_a_failed_call_forgets_the_view(loopback, make_service, settings):
    from registry.discovery import recent_instances

    settings.SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS = 60
    server = loopback({"/ok": Reply(200, {}), "/boom": Reply(500, {})})
    svc = make_service(url=server.url, status=HealthStatus.PASSING)
    service_client.get(service="PLANNING_SYSTEM", endpoint="/ok")
    svc.status = HealthStatus.CRITICAL
    svc.save()  # post_save: forgotten at once
    with pytest.raises(NoEligibleServiceError):
        service_client.get(service="PLANNING_SYSTEM", endpoint="/ok")

    svc.status = HealthStatus.PASSING
    svc.save()
    service_client.get(service="PLANNING_SYSTEM", endpoint="/ok")
    assert "PLANNING_SYSTEM" in recent_instances._entries
    with pytest.raises(ServiceResponseError):
        service_client.get(service="PLANNING_SYSTEM", endpoint="/boom", retries=0)
    assert "PLANNING_SYSTEM" not in recent_instances._entries  # the next call looks again


def test_the_health_sweep_turning_a_service_critical_is_seen_by_this_process_at_once(
    loopback, make_service, settings
):
    from registry import health

    settings.SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS = 60
    server = loopback({"/plans": Reply(200, {}), "/health": Reply(500, {})})
    make_service(url=server.url, status=HealthStatus.PASSING, health_path="/health",
                 failures_before_critical=1)
    service_client.get(service="PLANNING_SYSTEM", endpoint="/plans")
    health.health_sweep()  # bulk SQL writes: no post_save, so the sweep forgets the view itself
    with pytest.raises(NoEligibleServiceError):  # not CircuitOpenError from a stale view
        service_client.get(service="PLANNING_SYSTEM", endpoint="/plans")


# --- breaker states read with the registry view (one store round trip per view, not per call) ----


@pytest.fixture
def acquires(monkeypatch):
    """Counts the breaker store's atomic acquire (a spy: the real one runs)."""
    from registry import breakers

    counted: list[int] = []
    real = breakers.ServiceBreaker.acquire

    def spy(self, **kwargs):
        counted.append(self.service_id)
        return real(self, **kwargs)

    monkeypatch.setattr(breakers.ServiceBreaker, "acquire", spy)
    return counted


def test_calls_by_type_read_a_closed_breaker_with_the_registry_view(loopback, make_service, settings, acquires):
    settings.SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS = 5
    server = loopback({"/x": Reply(200, {})})
    make_service(url=server.url, status=HealthStatus.PASSING)
    client = ServiceClient()
    for _ in range(5):
        client.get(service="PLANNING_SYSTEM", endpoint="/x")
    assert server.count("/x") == 5 and acquires == []


def test_a_call_to_an_instance_still_asks_the_breaker_store(loopback, make_service, acquires):
    server = loopback({"/x": Reply(200, {})})
    svc = make_service(url=server.url, status=HealthStatus.PASSING)
    ServiceClient().get(service=svc, endpoint="/x")
    assert acquires == [svc.pk]


def test_a_breaker_opened_elsewhere_is_seen_when_the_view_is_read_again(loopback, make_service, settings):
    import time

    settings.SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS = 0.3
    server = loopback({"/x": Reply(200, {})})
    svc = make_service(url=server.url, status=HealthStatus.PASSING)
    client = ServiceClient()
    client.get(service="PLANNING_SYSTEM", endpoint="/x")
    breaker_for(svc).force_open(reason="another process")
    deadline = time.monotonic() + 10  # generous: the bound is the view's age (0.3 s)
    while True:
        try:
            client.get(service="PLANNING_SYSTEM", endpoint="/x")
        except CircuitOpenError:
            break
        assert time.monotonic() < deadline, "the open breaker was never seen"
        time.sleep(0.05)


def test_a_half_open_breaker_lets_no_call_by_type_past_the_trial(loopback, make_service, settings, acquires):
    settings.SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS = 5
    server = loopback({"/x": Reply(200, {})})
    svc = make_service(url=server.url, status=HealthStatus.PASSING)
    breaker_for(svc).force_open(reason="test")
    assert breaker_for(svc).acquire(force=True).trial  # another caller holds the one trial
    client = ServiceClient()
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            client.get(service="PLANNING_SYSTEM", endpoint="/x")
    assert server.count("/x") == 0 and len(acquires) == 4  # the store was asked every time


def test_a_failed_call_by_type_reads_the_breaker_again(loopback, make_service, settings, acquires):
    settings.SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS = 60
    server = loopback({"/x": Reply(500, {})})
    make_service(url=server.url, status=HealthStatus.PASSING)  # non-critical preset: fail_max 3
    client = ServiceClient()
    for _ in range(3):
        with pytest.raises(ServiceResponseError):
            client.get(service="PLANNING_SYSTEM", endpoint="/x", retries=0)
    with pytest.raises(CircuitOpenError):  # tripped by this process's own calls: seen at once
        client.get(service="PLANNING_SYSTEM", endpoint="/x", retries=0)
    assert server.count("/x") == 3
