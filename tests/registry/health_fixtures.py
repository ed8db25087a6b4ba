"""Fixtures shared by the health, breaker, client and alert tests (import them by name)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_lib
from django.conf import settings

from registry import alerts, breakers
from registry.models import Service
from tests.dbenv import broker_env, test_database_url
from tests.registry.loopback import Loopback

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def loopback():
    """Factory of loopback servers, all stopped at teardown."""
    servers: list[Loopback] = []

    def make(routes=None) -> Loopback:
        server = Loopback(routes=dict(routes or {}))
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def clean_state(transactional_db):
    """Empty breaker state (our own Redis db only) before and after; wait for background writers."""
    url = settings.REDIS_URL  # the suite's own db, even if the test points REDIS_URL elsewhere

    def wipe():
        if url:
            redis_lib.Redis.from_url(url).flushdb()
        breakers.storage_reset_for_tests()

    wipe()
    yield
    alerts.alerts_flush()
    wipe()


# The Redis store needs REDIS_URL: the embedded-default pass (SQLite, no Redis) runs the database store.
BREAKER_STORES = ["redis", "database"] if settings.REDIS_URL else ["database"]


@pytest.fixture(params=BREAKER_STORES)
def breaker_store(request, settings):
    """Run a breaker test once per shared store."""
    settings.BREAKER_STORE = request.param
    breakers.storage_reset_for_tests()
    yield request.param
    breakers.storage_reset_for_tests()


@pytest.fixture
def make_service(clean_state):
    counter = iter(range(1, 100_000))

    def make(*, url: str = "http://127.0.0.1:9", health_path: str = "/health", **fields) -> Service:
        n = next(counter)
        fields.setdefault("name", f"svc-{n}")
        fields.setdefault("type", "PLANNING_SYSTEM")
        if "health_url" not in fields:
            fields["health_url"] = url + health_path
        return Service.objects.create(url=url, **fields)

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of our own on a free port (the test may kill it); never the shared one."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis_lib.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis_lib.RedisError:
            time.sleep(0.05)
    proc.url = url
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def subprocess_env() -> dict[str, str]:
    """The test process's environment pointed at the test database, for child processes."""
    env = dict(os.environ)
    env["DATABASE_URL"] = test_database_url()
    env.update(broker_env())
    env["BREAKER_STORE"] = settings.BREAKER_STORE
    env["DJANGO_SETTINGS_MODULE"] = "berrys_portal.settings_test"
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_python(code: str, **popen) -> subprocess.Popen:
    """Start ``code`` in a fresh Python with Django set up against the test database."""
    prelude = "import django; django.setup()\n"
    return subprocess.Popen(
        [sys.executable, "-c", prelude + code], env=subprocess_env(), cwd=str(ROOT), text=True, **popen
    )
