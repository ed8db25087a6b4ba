"""The ASGI watch server (Procfile's ``watch``): many open watches, no thread each, all woken by a change."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import requests
from django.db import connection

from registry.models import HealthStatus, Service
from tests.registry.health_fixtures import free_port, subprocess_env
from tests.registry.watch_setup import make_planner, make_read_key

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_index_feed")]

ROOT = Path(__file__).resolve().parents[2]
WATCHERS = 300


@pytest.fixture
def watch_server(transactional_db):
    port = free_port()
    env = subprocess_env()
    env["DJANGO_SETTINGS_MODULE"] = "berrys_portal.settings_watch"
    env["WATCH_MAX_PER_KEY"] = str(WATCHERS)  # these tests open WATCHERS watches with one key
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "uvicorn"), "berrys_portal.asgi_watch:application", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(url + "/health", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.url = url
    yield proc
    proc.terminate()
    proc.wait(10)


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


async def _watch_all(url: str, token: str, index: int, n: int, on_open) -> list[tuple[int, float, int]]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(i: int):
            path = "/v1/health/service/planning-system" if i % 2 else "/discovery/PLANNING_SYSTEM"
            params = {"index": str(index), "wait": "60s"}
            if i % 2 == 0:
                params["all"] = "1"
            async with session.get(url + path, params=params, headers={"X-Consul-Token": token,
                                   "Authorization": f"Token {token}"}) as response:
                await response.read()
                header = response.headers.get("X-Consul-Index") or response.headers["X-Registry-Index"]
                return response.status, time.monotonic(), int(header)

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.sleep(2.0)  # every watch open and waiting
        changed_at = await asyncio.to_thread(on_open)
        results = await asyncio.gather(*tasks)
        return [(status, at - changed_at, idx) for status, at, idx in results]


def test_open_watches_hold_no_thread_and_all_wake_on_a_change(watch_server):
    planner = make_planner()
    _, token = make_read_key()
    first = requests.get(watch_server.url + "/v1/health/service/PLANNING_SYSTEM",
                         headers={"X-Consul-Token": token}, timeout=10)
    index = int(first.headers["X-Consul-Index"])
    idle_threads = _threads(watch_server.pid)
    seen: dict[str, int] = {}

    def change() -> float:
        seen["threads"] = _threads(watch_server.pid)
        Service.objects.filter(pk=planner.pk).update(status=HealthStatus.WARNING)
        at = time.monotonic()
        connection.close()  # this thread's connection, before the test database is dropped
        return at

    results = asyncio.run(_watch_all(watch_server.url, token, index, WATCHERS, change))
    assert {status for status, _, _ in results} == {200}
    assert all(idx > index for _, _, idx in results)
    # A fixed pool (the event loop, the index feed, a few executor threads), not one per watch.
    assert seen["threads"] <= idle_threads + 8, (idle_threads, seen["threads"])
    wakeups = sorted(delay for _, delay, _ in results)
    assert wakeups[-1] < 3.0, wakeups[-10:]  # generous here; bench/watch.py measures the p99
