"""clients/python's registration at start-up: waiting for a portal that is not up yet, and stopping."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from berrys_client import USER_AGENT, ServiceRegistration, ServiceResponseError, ServiceType
from berrys_client.sync import SyncServiceRegistration

from registry.auth import api_key_create
from registry.models import Service

pytestmark = [pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LatePortal:
    """Answers registration like the registry API, on a port chosen before it listens."""

    def __init__(self, port: int):
        self.calls: list[tuple[str, str, str | None]] = []
        portal = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                portal.calls.append((self.command, self.path, self.headers.get("User-Agent")))
                status, payload = (201, {"id": 7, **body}) if self.command == "POST" else (204, None)
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _registration(portal_url: str, key: str = "bp_test", **kw) -> dict:
    return dict(portal_url=portal_url, api_key=key, name="planning-system-1", type=ServiceType.PLANNING_SYSTEM,
                url="http://127.0.0.1:9431", **kw)


def test_start_with_retry_waits_for_a_portal_that_comes_up_later():
    port = _free_port()
    portal_url = f"http://127.0.0.1:{port}"

    async def scenario():
        registration = ServiceRegistration(**_registration(portal_url))
        with pytest.raises(Exception):  # noqa: B017 - without retry: the first refusal raises
            await registration.start()
        starting = asyncio.create_task(registration.start(retry=True, max_backoff=0.3))
        await asyncio.sleep(0.8)
        assert not starting.done()  # still waiting: nothing listens yet
        portal = LatePortal(port)
        try:
            assert await asyncio.wait_for(starting, 5) == 7
            await registration.stop()
        finally:
            portal.close()
        return portal.calls

    calls = asyncio.run(scenario())
    assert [c[:2] for c in calls] == [("POST", "/registry/services"), ("DELETE", "/registry/services/7")]
    assert {c[2] for c in calls} == {USER_AGENT}


def test_a_refusal_is_not_retried(live_server, transactional_db):
    read_only = api_key_create(name="reader", scopes=["registry:read"])[1]

    async def scenario():
        registration = ServiceRegistration(**_registration(live_server.url, read_only))
        started = time.monotonic()
        with pytest.raises(ServiceResponseError) as refused:
            await registration.start(retry=True)
        await registration.stop()
        return refused.value.status, time.monotonic() - started

    status, took = asyncio.run(scenario())
    assert status == 403 and took < 5
    assert not Service.objects.exists()


def test_stop_ends_a_start_still_waiting_for_the_portal():
    registration = SyncServiceRegistration(**_registration(f"http://127.0.0.1:{_free_port()}"))
    outcome: list[BaseException | int] = []

    def start():
        try:
            outcome.append(registration.start(retry=True, max_backoff=0.3))
        except BaseException as exc:  # noqa: BLE001 - the test reads what it was
            outcome.append(exc)

    waiting = threading.Thread(target=start)
    waiting.start()
    time.sleep(0.6)
    assert outcome == []
    registration.stop()
    waiting.join(5)
    assert not waiting.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], concurrent.futures.CancelledError | asyncio.CancelledError)
    assert registration.service_id is None
