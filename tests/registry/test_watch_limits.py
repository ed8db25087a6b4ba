"""The watch server's hardening: the Host check (ALLOWED_HOSTS) and the bounds on open watches.

A real uvicorn (``berrys_portal.asgi_watch``) on loopback, on a port of this branch's range.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import requests

from registry.models import Service
from tests.registry.health_fixtures import subprocess_env
from tests.registry.watch_setup import make_planner, make_read_key

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_index_feed")]

ROOT = Path(__file__).resolve().parents[2]
PORTS = range(9320, 9400)  # this branch's loopback range


def _port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 9320-9399")


@pytest.fixture
def start_watch_server(transactional_db):
    procs: list[subprocess.Popen] = []

    def start(**env: str) -> str:
        port = _port()
        full = subprocess_env()
        full.update(DJANGO_SETTINGS_MODULE="berrys_portal.settings_watch", **env)
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "uvicorn"), "berrys_portal.asgi_watch:application",
             "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env=full,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                requests.get(url + "/health", timeout=1)
                return url
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("the watch server did not start")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def planner(transactional_db) -> Service:
    return make_planner()


def _key() -> str:
    return make_read_key()[1]


# --- Host ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/catalog/services", "/discovery/PLANNING_SYSTEM?all=1", "/health"])
def test_a_host_not_in_allowed_hosts_is_a_400_in_the_api_error_shape(start_watch_server, planner, path):
    url = start_watch_server(ALLOWED_HOSTS="portal.example.com,127.0.0.1")
    key = _key()
    headers = {"X-Consul-Token": key, "Authorization": f"Token {key}"}
    refused = requests.get(url + path, headers={**headers, "Host": "evil.example"}, timeout=10)
    assert refused.status_code == 400
    assert refused.json()["code"] == "bad_request"
    assert "evil.example" in refused.json()["detail"]
    assert requests.get(url + path, headers={**headers, "Host": "portal.example.com"}, timeout=10).status_code == 200
    assert requests.get(url + path, headers=headers, timeout=10).status_code == 200  # Host: 127.0.0.1:port


def test_the_security_headers_are_still_sent(start_watch_server, planner):
    url = start_watch_server()
    key = _key()
    response = requests.get(url + "/v1/catalog/services", headers={"X-Consul-Token": key}, timeout=10)
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"


# --- Bounds on open watches ---------------------------------------------------------------


async def _open(session: aiohttp.ClientSession, url: str, key: str, index: int, i: int) -> aiohttp.ClientResponse:
    if i % 2:
        path, params = "/v1/health/service/planning-system", {}
    else:
        path, params = "/discovery/PLANNING_SYSTEM", {"all": "1"}
    params.update(index=str(index), wait="30s")
    return await session.get(url + path, params=params,
                             headers={"X-Consul-Token": key, "Authorization": f"Token {key}"})


def test_open_watches_are_bounded_per_key_with_429_and_in_all_with_503(start_watch_server, planner):
    url = start_watch_server(WATCH_MAX_PER_KEY="3", WATCH_MAX_OPEN="5", WATCH_RETRY_AFTER_SECONDS="7")
    first, second = _key(), _key()
    index = int(requests.get(url + "/v1/health/service/planning-system", headers={"X-Consul-Token": first},
                             timeout=10).headers["X-Consul-Index"])

    async def scenario() -> dict:
        seen: dict = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            waiting = [asyncio.create_task(_open(session, url, first, index, i)) for i in range(3)]
            await asyncio.sleep(1.0)
            assert not any(task.done() for task in waiting)  # three open watches of the first key
            for i in (0, 1):  # native and Consul: the fourth of the same key
                async with await _open(session, url, first, index, i) as refused:
                    seen[f"per_key_{i}"] = (refused.status, refused.headers.get("Retry-After"), await refused.json())
            # A query that answers at once (an older index, or none) takes no slot.
            async with await _open(session, url, first, index - 1, 1) as at_once:
                seen["at_once"] = at_once.status
            others = [asyncio.create_task(_open(session, url, second, index, i)) for i in range(2)]
            await asyncio.sleep(1.0)
            assert not any(task.done() for task in others)  # five open in all
            async with await _open(session, url, second, index, 0) as full:
                seen["full"] = (full.status, full.headers.get("Retry-After"), await full.json())
            # A watcher that goes away gives its slot back.
            waiting[0].cancel()
            await asyncio.gather(waiting[0], return_exceptions=True)
            await asyncio.sleep(0.5)
            again = asyncio.create_task(_open(session, url, first, index, 0))
            await asyncio.sleep(1.0)
            seen["again_waiting"] = not again.done()
            for task in [again, *waiting[1:], *others]:
                task.cancel()
            await asyncio.gather(again, *waiting[1:], *others, return_exceptions=True)
        return seen

    seen = asyncio.run(scenario())
    for i in (0, 1):
        status, retry_after, body = seen[f"per_key_{i}"]
        assert (status, retry_after, body["code"]) == (429, "7", "too_many_watches")
        assert "WATCH_MAX_PER_KEY" in body["detail"]
    assert seen["at_once"] == 200
    status, retry_after, body = seen["full"]
    assert (status, retry_after, body["code"]) == (503, "7", "watch_server_full")
    assert "WATCH_MAX_OPEN" in body["detail"]
    assert seen["again_waiting"]


def test_the_default_bound_per_key_is_256():
    from berrys_portal import settings as portal_settings

    assert portal_settings.WATCH_MAX_PER_KEY == 256
    assert portal_settings.WATCH_MAX_OPEN >= 1000
