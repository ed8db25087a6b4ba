"""clients/python against a live portal (live_server) and real loopback services."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from berrys_client import (
    CircuitOpenError,
    ServiceClient,
    ServiceConnectionError,
    ServiceDiscovery,
    ServiceNotFoundError,
    ServiceRegistration,
    ServiceResponseError,
    ServiceType,
)
from berrys_client.sync import SyncServiceClient, SyncServiceDiscovery
from django.db import connection

from registry.auth import api_key_create
from registry.models import HealthStatus, Service
from tests.registry.health_fixtures import loopback  # noqa: F401 - fixture used by name
from tests.registry.loopback import Reply

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_index_feed")]

PLAN = Reply(200, {"phases": ["one"]})


@pytest.fixture
def key(transactional_db) -> str:
    return api_key_create(name="planning-system", scopes=["registry:read", "registry:write"])[1]


def _in_db(fn):
    """Run ORM code from a coroutine's thread and close that thread's connection."""
    def run():
        try:
            return fn()
        finally:
            connection.close()
    return asyncio.to_thread(run)


def _planner(name: str, url: str, **fields) -> Service:
    return Service.objects.create(name=name, type=ServiceType.PLANNING_SYSTEM, url=url,
                                  status=HealthStatus.PASSING, **fields)


async def _eventually(condition, what, limit=15.0):
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        await asyncio.sleep(0.05)


async def _eventually_db(condition, what, limit=15.0):
    deadline = time.monotonic() + limit
    while not await _in_db(condition):
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        await asyncio.sleep(0.05)


def test_it_registers_heartbeats_and_deregisters_on_stop(live_server, key):
    async def scenario():
        registration = ServiceRegistration(
            live_server.url, key, name="planning-system-1", type=ServiceType.PLANNING_SYSTEM,
            url="http://127.0.0.1:8931", metadata={"version": "1.0.0"}, ttl_seconds=30, heartbeat_interval=0.2)
        async with registration:
            row = await _in_db(lambda: Service.objects.get(pk=registration.service_id))
            assert (row.name, row.metadata, row.ttl_seconds) == ("planning-system-1", {"version": "1.0.0"}, 30)
            # Polled with a generous limit: a loaded machine may stretch 0.2 s heartbeats.
            await _eventually(lambda: registration.heartbeats >= 3, "three heartbeats")
            row = await _in_db(lambda: Service.objects.get(pk=registration.service_id))
            assert row.last_heartbeat_at is not None
            # An operator deregisters it: the next heartbeat registers it again.
            await _in_db(lambda: Service.objects.filter(pk=registration.service_id).delete())
            await _eventually_db(lambda: Service.objects.filter(name="planning-system-1").count() == 1,
                                 "registered again after the operator's delete")
        assert await _in_db(lambda: Service.objects.filter(name="planning-system-1").count()) == 0

    asyncio.run(scenario())


def test_discovery_is_cached_and_kept_fresh_by_the_watch(live_server, key, loopback):  # noqa: F811
    a, b = loopback({"/plans/strategic": PLAN}), loopback({"/plans/strategic": PLAN})
    first = _planner("planner-a", a.url)
    _planner("planner-b", b.url)

    async def scenario():
        discovery = ServiceDiscovery(live_server.url, key, watch_wait="20s")
        try:
            assert len(await discovery.get_services_by_type(ServiceType.PLANNING_SYSTEM)) == 2
            picks = {(await discovery.get_service_by_type(ServiceType.PLANNING_SYSTEM))["name"] for _ in range(4)}
            assert picks == {"planner-a", "planner-b"}  # rotating
            await asyncio.sleep(0.3)  # the watch is waiting at the portal
            await _in_db(lambda: Service.objects.filter(pk=first.pk).update(status=HealthStatus.CRITICAL))
            started = time.monotonic()
            while len(await discovery.get_services_by_type(ServiceType.PLANNING_SYSTEM)) != 1:
                assert time.monotonic() - started < 3, "the watch did not bring the change"
                await asyncio.sleep(0.02)
            assert discovery.updates >= 1
            await _in_db(lambda: Service.objects.filter(type=ServiceType.PLANNING_SYSTEM).delete())
            started = time.monotonic()
            while True:
                try:
                    await discovery.get_services_by_type(ServiceType.PLANNING_SYSTEM)
                except ServiceNotFoundError as exc:
                    assert "No service of type PLANNING_SYSTEM found" in str(exc)
                    break
                assert time.monotonic() - started < 3
                await asyncio.sleep(0.02)
        finally:
            await discovery.close()

    asyncio.run(scenario())


_INSTANCE = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"phases": ["one"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def doomed_instance():
    """A service instance in its own process, so that killing it drops its connections too."""
    proc = subprocess.Popen([sys.executable, "-c", _INSTANCE], stdout=subprocess.PIPE, text=True)
    proc.url = f"http://127.0.0.1:{proc.stdout.readline().strip()}"
    yield proc
    proc.kill()
    proc.wait(5)


def test_calls_fail_over_when_an_instance_dies_and_breakers_open(live_server, key, loopback,  # noqa: F811
                                                                doomed_instance):
    a = doomed_instance
    b = loopback({"/plans/strategic": PLAN, "/bad": Reply(400, {"x": 1})})
    _planner("planner-a", a.url)
    _planner("planner-b", b.url)

    async def scenario():
        discovery = ServiceDiscovery(live_server.url, key)
        client = ServiceClient(discovery, retries=1, backoff=0.01)
        try:
            planning = await discovery.get_service_by_type(ServiceType.PLANNING_SYSTEM)
            assert await client.post(service=planning, endpoint="/plans/strategic", data={"p": 1}) == {"phases": ["one"]}
            a.kill()  # planner-a dies: its connections drop, new ones are refused
            a.wait(5)
            for _ in range(6):
                assert await client.post(service=ServiceType.PLANNING_SYSTEM, endpoint="/plans/strategic",
                                         data={}) == {"phases": ["one"]}
            with pytest.raises(ServiceResponseError) as bad:
                await client.get(service=ServiceType.PLANNING_SYSTEM, endpoint="/bad")
            assert bad.value.status == 400
            b.routes["/plans/strategic"] = Reply(503)
            before = b.count("/plans/strategic")
            with pytest.raises(ServiceConnectionError) as spent:  # b answers 503, a is gone: retries spent
                await client.post(service=ServiceType.PLANNING_SYSTEM, endpoint="/plans/strategic",
                                  data={}, idempotency_key="k-1")
            assert not isinstance(spent.value, CircuitOpenError)
            # b's third 503 opens its breaker (non-critical preset: 3); the retry finds every breaker open.
            with pytest.raises(CircuitOpenError):
                await client.post(service=ServiceType.PLANNING_SYSTEM, endpoint="/plans/strategic", data={},
                                  idempotency_key="k-2")
            b_instance = next(i for i in await discovery.get_services_by_type(ServiceType.PLANNING_SYSTEM)
                              if i["name"] == "planner-b")
            assert client.breaker(b_instance).state == "open"
            assert b.count("/plans/strategic") - before == 3  # 2 tries, then 1: none once the breaker opened
        finally:
            await client.close()
            await discovery.close()

    asyncio.run(scenario())


class _EchoHeaders(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"idempotency_key": self.headers.get("Idempotency-Key")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_the_sync_twin_passes_the_idempotency_key_through(live_server, key):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHeaders)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _planner("planner-echo", f"http://127.0.0.1:{server.server_address[1]}")
        discovery = SyncServiceDiscovery(live_server.url, key)
        client = SyncServiceClient(discovery)
        planning = discovery.get_service_by_type(ServiceType.PLANNING_SYSTEM)
        answer = client.post(service=planning, endpoint="/plans/strategic", data={}, idempotency_key="step-42")
        assert answer == {"idempotency_key": "step-42"}
        client.close()
        discovery.close()
    finally:
        server.shutdown()
        server.server_close()
