"""Circuit breakers: presets, shared state across OS processes, one trial at a time,
Redis outages, no serialisation of concurrent calls, transitions recorded."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pybreaker
import pytest
from django.db import connection

from berrys_portal.errors import CircuitOpenError, ServiceResponseError
from registry import alerts, breakers
from registry.breakers import breaker_config, breaker_for, breaker_forget
from registry.client import ServiceClient
from registry.models import Alert, BreakerEvent, Criticality
from registry.models_breaker import BreakerStore
from tests.registry.health_fixtures import BREAKER_STORES, run_python
from tests.registry.loopback import Reply

# Every test here runs once per shared store (Redis, the database); see breaker_store.
pytestmark = [pytest.mark.both_dbs, pytest.mark.usefixtures("breaker_store")]


@pytest.fixture
def client():
    return ServiceClient(sleep=lambda s: None)


def test_presets_follow_the_guide_and_service_overrides_win(make_service):
    critical = make_service(criticality=Criticality.CRITICAL)
    other = make_service()
    tuned = make_service(criticality=Criticality.CRITICAL, breaker_fail_max=9,
                         breaker_reset_timeout_seconds=2.5, breaker_call_timeout_seconds=1.0)
    assert breaker_config(critical) == breakers.BreakerConfig(5, 30.0, 5.0)
    assert breaker_config(other) == breakers.BreakerConfig(3, 60.0, 10.0)
    assert breaker_config(tuned) == breakers.BreakerConfig(9, 2.5, 1.0)


def test_each_service_has_its_own_breaker_state(loopback, make_service, client):
    server = loopback({"/x": Reply(500)})
    a = make_service(url=server.url)
    b = make_service(url=server.url)
    for _ in range(3):
        with pytest.raises(ServiceResponseError):
            client.get(service=a, endpoint="/x", retries=0)
    assert breaker_for(a).snapshot().state == "open"
    assert breaker_for(b).snapshot().state == "closed"
    assert breaker_for(a).name != breaker_for(b).name


def _reset_timeout_passed(svc) -> None:
    """Move the breaker's opened_at back past its reset timeout (through pybreaker's storage,
    which writes the shared store): the next caller gets the half-open trial, no sleeping."""
    storage = breaker_for(svc)._state_storage
    storage.opened_at = datetime.now(UTC) - timedelta(seconds=breaker_config(svc).reset_timeout + 1)


def _all_in_flight(n: int) -> Callable[[int], Reply]:
    """A route that answers only once ``n`` requests are in flight at the same time (a barrier):
    calls that were serialised would never get there, and get a 500."""
    barrier = threading.Barrier(n, timeout=20)

    def reply(_hit: int) -> Reply:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return Reply(500, {"detail": "not concurrent"})
        return Reply(200, {"ok": True})

    return reply


def test_pybreakers_call_does_not_serialise_callers_and_raises_circuit_breaker_error_when_open(make_service):
    svc = make_service(breaker_fail_max=2)
    breaker = breaker_for(svc)
    barrier = threading.Barrier(4, timeout=20)
    results = []
    threads = [threading.Thread(target=lambda: results.append(breaker.call(barrier.wait))) for _ in range(4)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert sorted(results) == [0, 1, 2, 3]  # all four were inside call() at once

    def boom():
        raise OSError("connection refused")

    for _ in range(2):
        with pytest.raises(OSError):
            breaker.call(boom)
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(lambda: "not sent")
    assert breaker.current_state == "open"
    assert issubclass(CircuitOpenError, pybreaker.CircuitBreakerError)  # what the ServiceClient raises


def test_pybreakers_public_state_is_the_shared_state(make_service):
    svc = make_service(breaker_fail_max=3)
    here = breaker_for(svc)
    there = breakers.ServiceBreaker(svc)  # another process's breaker object for the same service
    heard = []

    class Listener(pybreaker.CircuitBreakerListener):
        def state_change(self, cb, old_state, new_state):
            heard.append((old_state.name if old_state else None, new_state.name))

    here.add_listener(Listener())
    there.failed(there.acquire(), "boom 1")
    there.failed(there.acquire(), "boom 2")
    assert (here.current_state, here.fail_counter, here.success_counter) == ("closed", 2, 0)
    there.failed(there.acquire(), "boom 3")
    assert here.current_state == "open" and here.fail_counter == 0
    opened = here._state_storage.opened_at
    assert opened is not None and abs((datetime.now(UTC) - opened).total_seconds()) < 60
    assert here.state.name == "open"  # pybreaker's own property notices the change made elsewhere
    assert heard == [("closed", "open")]

    earlier = datetime.now(UTC) - timedelta(hours=1)
    here._state_storage.opened_at = earlier  # the setter writes the store
    assert there._state_storage.opened_at == earlier

    permit = here.acquire()  # the reset timeout has passed: this is the half-open trial
    assert permit.trial and there.current_state == "half-open"
    here.succeeded(permit)
    assert there.current_state == "closed"
    assert heard == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    with pytest.raises(ValueError):
        here.success_threshold = 2  # the shared rules close on the first success


def test_concurrent_calls_through_one_breaker_are_not_serialised(loopback, make_service, client):
    server = loopback({"/slow": _all_in_flight(5)})
    svc = make_service(url=server.url)
    results, errors = [], []

    def call():
        try:
            results.append(client.get(service=svc, endpoint="/slow").status)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    # Each answer waited for all five requests to be in flight at once.
    assert errors == [] and results == [200] * 5


def test_transitions_are_recorded_as_breaker_events(loopback, make_service, client):
    server = loopback({"/x": Reply(503)})
    svc = make_service(url=server.url)
    for _ in range(3):
        with pytest.raises(ServiceResponseError):
            client.get(service=svc, endpoint="/x", retries=0)
    _reset_timeout_passed(svc)
    server.routes["/x"] = Reply(200)
    assert client.get(service=svc, endpoint="/x").status == 200  # the half-open trial

    rows = list(BreakerEvent.objects.filter(service=svc).order_by("at").values_list("old_state", "new_state"))
    assert rows == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    assert "HTTP 503" in BreakerEvent.objects.get(service=svc, new_state="open").last_error


def test_a_failed_trial_opens_the_breaker_again(loopback, make_service, client):
    server = loopback({"/x": Reply(500)})
    svc = make_service(url=server.url, breaker_fail_max=1)
    with pytest.raises(ServiceResponseError):
        client.get(service=svc, endpoint="/x")
    _reset_timeout_passed(svc)
    with pytest.raises(ServiceResponseError):
        client.get(service=svc, endpoint="/x")  # the trial, failing
    with pytest.raises(CircuitOpenError):
        client.get(service=svc, endpoint="/x")
    assert server.count("/x") == 2


def test_a_breaker_tripped_in_another_process_is_seen_open_here(loopback, make_service, client):
    server = loopback({"/x": Reply(500), "/ok": Reply(200)})
    svc = make_service(url=server.url)

    child = run_python(
        "from registry.client import ServiceClient\n"
        "from registry.models import Service\n"
        f"svc = Service.objects.get(pk={svc.pk})\n"
        "c = ServiceClient(sleep=lambda s: None)\n"
        "for _ in range(3):\n"
        "    try: c.get(service=svc, endpoint='/x', retries=0)\n"
        "    except Exception as e: print(type(e).__name__)\n",
        stdout=subprocess.PIPE,
    )
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and out.split() == ["ServiceResponseError"] * 3

    assert breaker_for(svc).snapshot().state == "open"
    with pytest.raises(CircuitOpenError):
        client.get(service=svc, endpoint="/ok")
    assert server.count("/ok") == 0
    # The child recorded the transition once; this process saw it, and did not record it again.
    assert BreakerEvent.objects.filter(service=svc, new_state="open").count() == 1


def test_only_one_half_open_trial_runs_at_a_time_across_processes(loopback, make_service, client):
    server = loopback({"/slow": Reply(200, delay=1.5), "/x": Reply(200)})
    svc = make_service(url=server.url)
    breaker_for(svc).force_open(reason="test")
    _reset_timeout_passed(svc)

    child = run_python(
        "import time\n"
        "from registry.client import ServiceClient\n"
        "from registry.models import Service\n"
        f"svc = Service.objects.get(pk={svc.pk})\n"
        "r = ServiceClient().get(service=svc, endpoint='/slow', retries=0)\n"
        "print(r.call.trial, r.status, flush=True)\n",
        stdout=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while server.count("/slow") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.count("/slow") == 1  # the child holds the trial now

    with pytest.raises(CircuitOpenError):
        client.get(service=svc, endpoint="/x")  # a second trial is refused while the first runs
    assert server.count("/x") == 0

    out, _ = child.communicate(timeout=30)
    assert out.split() == ["True", "200"]
    assert breaker_for(svc).snapshot().state == "closed"
    assert client.get(service=svc, endpoint="/x").status == 200


@pytest.mark.skipif("redis" not in BREAKER_STORES, reason="the Redis store runs in the PostgreSQL + Redis pass")
@pytest.mark.parametrize("breaker_store", ["redis"], indirect=True)
def test_redis_going_away_leaves_breakers_usable_and_raises_an_alert(
    loopback, make_service, client, private_redis, settings
):
    settings.REDIS_URL = private_redis.url
    breakers.storage_reset_for_tests()
    server = loopback({"/x": Reply(200), "/bad": Reply(500)})
    svc = make_service(url=server.url)
    assert client.get(service=svc, endpoint="/x").status == 200
    assert breakers._redis_backends  # really used the private Redis

    private_redis.kill()
    private_redis.wait(5)

    started = time.monotonic()
    assert client.get(service=svc, endpoint="/x").status == 200  # reads as closed, keeps working
    assert time.monotonic() - started < 5.0  # 0.3 s socket timeouts, not the 10 s call budget
    # Process-local state still protects the service while Redis is gone.
    for _ in range(3):
        with pytest.raises(ServiceResponseError):
            client.get(service=svc, endpoint="/bad", retries=0)
    with pytest.raises(CircuitOpenError):
        client.get(service=svc, endpoint="/x")

    alerts.alerts_flush()
    assert Alert.objects.filter(kind="breaker_storage_down").count() == 1


@pytest.mark.parametrize("breaker_store", ["database"], indirect=True)
def test_the_database_store_going_away_leaves_breakers_usable_and_raises_an_alert(
    loopback, make_service, client
):
    server = loopback({"/x": Reply(200), "/bad": Reply(500)})
    svc = make_service(url=server.url)
    breaker_for(svc).force_open(reason="before the outage")
    assert BreakerStore.objects.get(service_id=svc.pk).state == "open"  # really in the table
    breaker_for(svc).reset()

    # The store's table gone stands for a store that cannot answer (every statement fails).
    with connection.schema_editor() as editor:
        editor.delete_model(BreakerStore)
    try:
        assert client.get(service=svc, endpoint="/x").status == 200  # reads as closed, keeps working
        for _ in range(3):
            with pytest.raises(ServiceResponseError):
                client.get(service=svc, endpoint="/bad", retries=0)
        with pytest.raises(CircuitOpenError):  # process-local state still protects the service
            client.get(service=svc, endpoint="/x")
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(BreakerStore)
    alerts.alerts_flush()
    assert Alert.objects.filter(kind="breaker_storage_down").count() == 1


@pytest.mark.parametrize("breaker_store", ["database"], indirect=True)
def test_the_database_store_keeps_one_row_per_service_changed_by_compare_and_set(make_service):
    svc = make_service(breaker_fail_max=2)
    breaker = breaker_for(svc)
    assert breaker.succeeded(breaker.acquire()) == "closed"
    assert not BreakerStore.objects.exists()  # a clean closed breaker writes nothing
    assert breaker.failed(breaker.acquire(), "boom 1") == "closed"
    assert breaker.failed(breaker.acquire(), "boom 2") == "open"
    row = BreakerStore.objects.get(service_id=svc.pk)
    assert (row.state, row.fails, row.last_error) == ("open", 0, "boom 2")
    _reset_timeout_passed(svc)
    # Two processes' worth of racing for the trial: the compare-and-set lets exactly one win.
    permits = []
    barrier = threading.Barrier(4)

    def race():
        barrier.wait()
        permits.append(breaker_for(svc).acquire())
        connection.close()

    threads = [threading.Thread(target=race) for _ in range(4)]
    [t.start() for t in threads]
    [t.join(10) for t in threads]
    trials = [p for p in permits if p is not None]
    assert len(permits) == 4 and len(trials) == 1 and trials[0].trial
    assert BreakerStore.objects.get(service_id=svc.pk).state == "half-open"
    assert breaker.succeeded(trials[0]) == "closed"
    breaker_forget(service_id=svc.pk)
    assert not BreakerStore.objects.exists()


def test_many_breakers_read_at_once_match_each_breaker_read_alone(make_service):
    # The sweep's gate reads a batch of breakers in one call (a Lua script on Redis that
    # returns only breakers with state): untouched, failing, open and half-open ones side by side.
    untouched, failing, tripped, trial = (make_service() for _ in range(4))
    breaker_for(failing).failed(breaker_for(failing).acquire(), "health probe: HTTP 500")
    breaker_for(tripped).force_open(reason="health check critical: HTTP 500")
    breaker_for(trial).force_open(reason="health check critical: HTTP 500")
    assert breaker_for(trial).acquire(force=True, lease_seconds=30).trial
    ids = [untouched.pk, failing.pk, tripped.pk, trial.pk]
    many = breakers.breaker_snapshots(ids)
    assert list(many) == ids
    services = (untouched, failing, tripped, trial)
    assert many == {pk: breaker_for(svc).snapshot() for pk, svc in zip(ids, services, strict=True)}
    assert [s.state for s in many.values()] == ["closed", "closed", "open", "half-open"]
    assert many[failing.pk].fail_counter == 1 and many[trial.pk].trial_held
    assert not many[untouched.pk].trial_held and many[untouched.pk].opened_at is None
