"""Shared fixtures: API clients for each persona, keys with scopes, the simulated services."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from registry.auth import api_key_create
from simulators.process import SimulatorProcess


def _client_with(scopes: list[str], name: str, **limits) -> APIClient:
    key, plain = api_key_create(name=name, scopes=scopes, **limits)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
    client.plain_key = plain
    client.api_key = key
    return client


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def read_client(db) -> APIClient:
    return _client_with(["registry:read", "metrics"], "reader")


@pytest.fixture
def register_client(db) -> APIClient:
    return _client_with(["registry:read", "registry:write"], "registrar")


@pytest.fixture
def workflows_client(db) -> APIClient:
    return _client_with(["registry:read", "workflows"], "workflow-caller")


@pytest.fixture
def operate_client(db) -> APIClient:
    """A key that may act on every run (workflows:operate), like an operator's tooling."""
    return _client_with(["registry:read", "workflows:operate"], "run-operator")


@pytest.fixture
def full_client(db) -> APIClient:
    return _client_with(["registry:read", "registry:write", "workflows", "gateway", "metrics"], "everything",
                        gateway_allow=["*:*"])


def pytest_collection_modifyitems(config, items):
    """On the embedded default (DATABASE_URL=sqlite:///…, no REDIS_URL) run only the tests
    marked ``both_dbs``: the rest rely on PostgreSQL- or Redis-only behaviour."""
    from django.db import connection

    if connection.vendor == "postgresql":
        return
    keep = [item for item in items if item.get_closest_marker("both_dbs")]
    dropped = [item for item in items if not item.get_closest_marker("both_dbs")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def _fresh_breaker_state():
    """Breaker state lives in Redis keyed by service id, and ids restart with every test
    database: forget what an earlier run left in this run's Redis db."""
    import redis
    from django.conf import settings

    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter(f"{settings.BREAKER_REDIS_PREFIX}:*"):
            client.delete(key)
    yield


@pytest.fixture(scope="session", autouse=True)
def _redis_left_as_found():
    """Delete, at the end, every Redis key the session created (breaker hashes, throttle
    counters, the test workers' queues and kombu bindings) in the suite's Redis db(s);
    keys that were there before the session are left alone."""
    import redis
    from django.conf import settings

    urls = {url for url in (settings.REDIS_URL, settings.CELERY_BROKER_URL) if url and url.startswith("redis")}
    before = {}
    for url in urls:
        with redis.Redis.from_url(url) as client:
            before[url] = set(client.scan_iter(count=1000))
    yield
    for url in urls:
        with redis.Redis.from_url(url) as client:
            new = [key for key in client.scan_iter(count=1000) if key not in before[url]]
            for start in range(0, len(new), 500):
                client.delete(*new[start:start + 500])


@pytest.fixture(scope="module")
def sims():
    """The five simulated Berrys services as one real process, for a test module."""
    stack = SimulatorProcess.start()
    yield stack
    stack.stop()


def loopback_only_resolve(host: str, port: int) -> list[str]:
    """The suite's resolver: ``localhost`` only. Nothing in the tests may ask the machine's DNS
    server (it is not on loopback); tests that need a name use ``egress.resolver_use``."""
    import socket

    if host.lower() in ("localhost", "localhost.localdomain"):
        return ["127.0.0.1"]
    raise socket.gaierror(socket.EAI_NONAME, f"{host}: not resolved in tests")


@pytest.fixture(autouse=True)
def _no_dns_in_tests():
    from registry import egress

    with egress.resolver_use(loopback_only_resolve):
        yield


@pytest.fixture
def fresh_index_feed():
    """A registry index feed started by this test and stopped after it.

    Between tests the database is flushed (its indexes start again) and, after the last,
    dropped: the feed's in-memory indexes and its connection must not outlive either.
    """
    from registry.consul_views import answers_clear
    from registry.watch import index_feed_stop
    from registry.watch_views import answers_clear as native_answers_clear

    index_feed_stop()
    answers_clear()
    native_answers_clear()
    yield
    index_feed_stop()
    answers_clear()
    native_answers_clear()
