"""Fixtures for the workflow engine: a real Celery worker, loopback HTTP services, waiting helpers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

import tests.workflows.definitions  # noqa: F401 - registers the test-only workflows here too
from registry.models import HealthStatus, Service
from simulators.core import send_json
from tests.celery_worker import CeleryWorker
from tests.dbenv import broker_env, test_database_url
from workflows.models import RUN_FINISHED, WorkflowRun

ROOT = Path(__file__).resolve().parents[2]
QUEUE = f"wf-test-{uuid.uuid4().hex[:8]}"
# Short leases so lost-worker tests finish quickly; the production delivery cap (the fault
# run's faults may hit one step twice, and a third delivery must still run it).
WORKER_ENV = {
    "WORKFLOW_STEP_LEASE_SECONDS": "5",
    "WORKFLOW_MAX_DELIVERIES": "3",
}


class Worker:
    """A `celery worker` subprocess on the test database and a private queue."""

    queue = QUEUE
    concurrency = 2

    def __init__(self, db_name: str):
        self.db_name = db_name
        self.proc: subprocess.Popen | None = None
        self._process: CeleryWorker | None = None
        self.log_path = ROOT / "var" / f"test-worker-{self.queue}.log"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(WORKER_ENV)
        env.update(broker_env())
        env.update({
            "DJANGO_SETTINGS_MODULE": "berrys_portal.settings_test",
            "DATABASE_URL": test_database_url(self.db_name),
            "WORKFLOW_QUEUE": self.queue,
            "WORKFLOW_DEFINITION_MODULES": "tests.workflows.definitions",
            "PYTHONPATH": str(ROOT),
        })
        return env

    def start(self) -> None:
        self._process = CeleryWorker(self.queue, self.env(), self.log_path, concurrency=self.concurrency)
        self.proc = self._process.start(timeout=30).proc

    def kill(self) -> None:
        """SIGKILL the worker and its pool children (the whole process group)."""
        if self.proc:
            self._process.kill()

    def stop(self) -> None:
        if self.proc:
            self._process.stop(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()


def worker_for_session(worker_class: type[Worker], django_db_blocker):
    """Start a worker of ``worker_class`` on the test database; yields it, then stops it."""
    with django_db_blocker.unblock():
        db_name = connection.settings_dict["NAME"]
    w = worker_class(db_name)
    w.start()
    yield w
    w.stop()
    w.kill()


# The engine suite runs on each production broker: Redis (the default) and RabbitMQ
# (the durable choice, quorum queues). BROKERS=redis runs only the first.
BROKERS = [b for b in os.environ.get("WORKFLOW_TEST_BROKERS", "redis,rabbitmq").split(",") if b]
_active = {"broker": "redis"}


class RabbitMQ:
    """A vhost of our own on the shared RabbitMQ (127.0.0.1:5672), deleted afterwards."""

    def __init__(self):
        self.vhost = f"wf-test-{uuid.uuid4().hex[:8]}"
        self.url = f"amqp://guest:guest@127.0.0.1:5672/{self.vhost}"

    @staticmethod
    def available() -> str | None:
        """Why RabbitMQ cannot be used here, or None."""
        if shutil.which("rabbitmqctl") is None:
            return "rabbitmqctl is not installed"
        try:
            socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
        except OSError:
            return "no RabbitMQ on 127.0.0.1:5672"
        return None

    def _ctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)

    def create(self) -> None:
        self._ctl("add_vhost", self.vhost)
        self._ctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")

    def delete(self) -> None:
        self._ctl("delete_vhost", self.vhost)


_REDIS = {}


def _use_broker(url: str | None) -> None:
    """Point this process's Celery app (and the settings the workers inherit) at ``url``
    (an amqp URL, or None: back to the suite's Redis)."""
    from berrys_portal.celery import app

    if not _REDIS:
        _REDIS.update(url=settings.CELERY_BROKER_URL, options=dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS))
    amqp = url is not None
    settings.CELERY_BROKER_URL = url if amqp else _REDIS["url"]
    app.conf.broker_url = settings.CELERY_BROKER_URL
    app.conf.broker_transport_options = {"confirm_publish": True} if amqp else _REDIS["options"]
    # As berrys_portal/settings.py configures an amqp:// broker.
    app.conf.task_default_queue_type = app.conf.task_create_missing_queue_type = "quorum" if amqp else "classic"
    app.conf.task_default_exchange_type = "topic" if amqp else "direct"
    app._after_fork()  # drop the connection pools
    app.__dict__.pop("amqp", None)  # queue declarations cached with the old queue type
    _active["broker"] = "rabbitmq" if amqp else "redis"


@pytest.fixture(scope="session", params=BROKERS)
def worker(request, django_db_setup, django_db_blocker):
    if request.param == "redis":
        yield from worker_for_session(Worker, django_db_blocker)
        return
    why = RabbitMQ.available() if settings.REDIS_URL else "the embedded-default pass keeps its own broker"
    if why:
        pytest.skip(f"RabbitMQ broker variant skipped: {why}")
    rabbit = RabbitMQ()
    rabbit.create()
    _use_broker(rabbit.url)  # the worker inherits it through settings.CELERY_BROKER_URL
    try:
        for w in worker_for_session(Worker, django_db_blocker):
            w.broker_url = rabbit.url
            _use_broker(None)
            yield w
            _use_broker(rabbit.url)  # its stop/restart below
    finally:
        _use_broker(None)
        rabbit.delete()


@pytest.fixture
def wf_settings(settings):
    """The test process enqueues to the worker's queue and reconciles with a short grace."""
    settings.WORKFLOW_QUEUE = QUEUE
    settings.WORKFLOW_RECONCILE_GRACE_SECONDS = 1
    return settings


@pytest.fixture
def engine_env(worker, wf_settings, transactional_db):
    """Everything a worker test needs: a running worker, committed rows, our queue
    (and, for the RabbitMQ variant, this process publishing to RabbitMQ for the test)."""
    rabbit_url = getattr(worker, "broker_url", None)
    if rabbit_url:
        _use_broker(rabbit_url)
    try:
        yield worker
        # A test that killed the worker leaves it for the next one in a good state.
        if worker.proc is None or worker.proc.poll() is not None:
            worker.start()
    finally:
        if rabbit_url:
            _use_broker(None)


# --------------------------------------------------------------------------- HTTP stubs


class StubServer:
    """A loopback HTTP service. ``routes[(METHOD, path)] = callable(body) -> (status, json)``."""

    def __init__(self):
        self.routes: dict[tuple[str, str], Callable] = {}
        self.requests: list[tuple[str, str, object, float]] = []
        self.headers: list[dict[str, str]] = []  # each request's headers, parallel to requests
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: no ~40 ms stall

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                stub.headers.append(dict(self.headers.items()))
                stub.requests.append((self.command, self.path, body, time.monotonic()))
                route = stub.routes.get((self.command, self.path))
                status, payload = route(body) if route else (404, {"detail": "no route"})
                send_json(self, status, payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def register(self, service_type: str, name: str | None = None) -> Service:
        return Service.objects.create(
            name=name or f"{service_type.lower()}-1", type=service_type, url=self.url,
            health_url=self.url + "/health", status=HealthStatus.PASSING,
        )

    def hits(self, path: str) -> list:
        return [r for r in self.requests if r[1] == path]


@pytest.fixture
def stub():
    servers: list[StubServer] = []

    def make() -> StubServer:
        s = StubServer()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def demo_routes(server: StubServer) -> None:
    """Happy-path answers for the test_demo workflow."""
    server.routes[("POST", "/projects")] = lambda body: (201, {"id": "p-1", "name": body["name"]})
    server.routes[("POST", "/plans/strategic/p-1")] = lambda body: (200, {"phases": ["a", "b"]})
    server.routes[("POST", "/agents")] = lambda body: (200, [{"agent": "planner"}])


@pytest.fixture
def demo_services(stub):
    """One server playing the three services of the demo workflow."""
    server = stub()
    demo_routes(server)
    for t in ("PROJECT_COORDINATOR", "PLANNING_SYSTEM", "AGENT_ORCHESTRATOR"):
        server.register(t)
    return server


def wait_for_run(run_id, *, statuses=RUN_FINISHED, timeout: float = 20.0) -> WorkflowRun:
    deadline = time.monotonic() + timeout
    while True:
        run = WorkflowRun.objects.get(pk=run_id)
        if run.status in statuses:
            return run
        if time.monotonic() > deadline:
            steps = list(run.steps.values_list("name", "status", "deliveries", "error"))
            raise AssertionError(f"run still {run.status} after {timeout}s; steps: {steps}")
        time.sleep(0.05)


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class _AmqpBroker:
    """The two things the tests ask of the broker, on RabbitMQ: empty it, count a queue."""

    def flushdb(self) -> None:
        from berrys_portal.celery import app

        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(QUEUE)

    def llen(self, queue: str) -> int:
        from berrys_portal.celery import app

        with app.connection_for_write() as conn:
            try:
                return conn.default_channel.queue_declare(queue, passive=True).message_count
            except Exception:  # noqa: BLE001 - no such queue: nothing was ever sent
                return 0

    def close(self) -> None:
        pass


@pytest.fixture
def broker():
    """The test's own Redis db (the broker): only ever FLUSHDB on it (RabbitMQ: purge our queue)."""
    client = _AmqpBroker() if _active["broker"] == "rabbitmq" else redis.Redis.from_url(settings.CELERY_BROKER_URL)
    yield client
    client.close()
