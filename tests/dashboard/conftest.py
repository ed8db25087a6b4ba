"""Personas for the admin: an operator, a viewer (both staff, in their groups)."""

from __future__ import annotations

import pytest
from django.test import Client

from berrys_portal.roles import OPERATORS, VIEWERS
from registry.models import Service
from tests.personas import logged_in, staff_user


@pytest.fixture(autouse=True)
def _fresh_dashboard_cache():
    """The dashboard caches closed hours of its runs chart; each test starts without."""
    from dashboard.queries import runs_chart_cache_clear

    runs_chart_cache_clear()
    yield
    runs_chart_cache_clear()


@pytest.fixture
def operator(db):
    return staff_user("olivia", OPERATORS)


@pytest.fixture
def viewer(db):
    return staff_user("victor", VIEWERS)


@pytest.fixture
def operator_client(operator) -> Client:
    return logged_in(operator)


@pytest.fixture
def viewer_client(viewer) -> Client:
    return logged_in(viewer)


# --- A Celery worker writing JSON logs, on its own queue ---------------------------------
# Reuses the workflow engineer's harness (tests/workflows/conftest.py); the worker
# gets LOG_FORMAT=json so the tests can read its structured log lines.

import uuid  # noqa: E402

from tests.workflows import conftest as wf_conftest  # noqa: E402
from tests.workflows.conftest import demo_routes, stub, wait_for_run  # noqa: E402,F401

DASH_QUEUE = f"dash-test-{uuid.uuid4().hex[:8]}"


class JsonLogWorker(wf_conftest.Worker):
    """One process writing JSON logs at INFO to a log file the tests read."""

    queue = DASH_QUEUE
    concurrency = 1

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update({"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"})
        return env

    def start(self) -> None:
        self.log_path.parent.mkdir(exist_ok=True)
        self.log_path.write_bytes(b"")  # each start's lines only
        super().start()

    def kill(self) -> None:
        # Kept for post-mortems (the next start empties the log).
        if self.log_path.exists():
            self.log_path.with_suffix(".last.log").write_bytes(self.log_path.read_bytes())
        super().kill()


@pytest.fixture(scope="session")
def dash_worker(django_db_setup, django_db_blocker):
    yield from wf_conftest.worker_for_session(JsonLogWorker, django_db_blocker)


@pytest.fixture
def engine(dash_worker, settings, transactional_db):
    """A running worker on our queue, committed rows, the test's enqueues going to it."""
    settings.WORKFLOW_QUEUE = DASH_QUEUE
    breakers_forget_all()
    yield dash_worker
    if dash_worker.proc is None or dash_worker.proc.poll() is not None:
        dash_worker.start()


def breakers_forget_all() -> None:
    """Drop shared breaker state left in this test run's Redis db: service ids restart
    with every test database, so an old run's open breaker would hit a new service."""
    import redis
    from django.conf import settings

    from registry import breaker_redis, breakers

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{breaker_redis._prefix()}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
    breakers.storage_reset_for_tests()


class Flaky:
    """Route behaviour for a loopback service: fail with 500 until told to succeed."""

    def __init__(self, ok_payload):
        self.ok = False
        self.payload = ok_payload

    def __call__(self, body):
        return (200, self.payload) if self.ok else (500, {"detail": "agent pool exhausted"})


@pytest.fixture
def flaky_services(stub):  # noqa: F811 - the imported fixture
    """The test_demo workflow's three services on one loopback server; /agents fails until .ok."""
    server = stub()
    demo_routes(server)
    flaky = Flaky([{"agent": "planner"}])
    server.routes[("POST", "/agents")] = flaky
    for t in ("PROJECT_COORDINATOR", "PLANNING_SYSTEM", "AGENT_ORCHESTRATOR"):
        svc = server.register(t)
        # test_demo's 3 attempts must not open the breaker (non-critical preset: 3
        # failures), or the operator's retry would be refused with "circuit open".
        Service.objects.filter(pk=svc.pk).update(breaker_fail_max=20)
    server.flaky = flaky
    return server
