"""Woken watches get one ready-made answer (``ReadyResponse``), byte for byte what a fresh request gets."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
import requests
from django.db import connection
from django.test import AsyncClient, override_settings

from registry.auth import api_key_revoke
from registry.models import ApiKey, HealthStatus, Service
from tests.registry.test_watch_server import watch_server  # noqa: F401 - the fixture
from tests.registry.watch_setup import WATCH_SERVER, asgi_get, make_planner, make_read_key

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_index_feed")]

PATHS = [("/v1/health/service/planning-system", {}), ("/v1/catalog/service/PLANNING_SYSTEM", {"stale": ""}),
         ("/discovery/PLANNING_SYSTEM", {"all": "1"}), ("/registry/services", {})]
EACH = 4  # watchers per path: all but the first get the shared response object


def _headers(raw) -> list[tuple[str, str]]:
    """Every header as sent (names lower-cased, in order), but the clock's ``date``."""
    return [(name.decode().lower(), value.decode()) for name, value in raw if name.lower() != b"date"]


async def _woken(url: str, token: str, indexes: dict[str, int], change) -> list[tuple[str, dict, int, list, bytes]]:
    auth = {"X-Consul-Token": token, "Authorization": f"Token {token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(path: str, params: dict):
            index_params = dict(params, index=str(indexes[path]), wait="60s")
            async with session.get(url + path, params=index_params, headers=auth) as response:
                return path, params, response.status, _headers(response.raw_headers), await response.read()

        tasks = [asyncio.create_task(one(path, params)) for path, params in PATHS for _ in range(EACH)]
        await asyncio.sleep(1.5)  # all open and waiting
        await asyncio.to_thread(change)
        return await asyncio.gather(*tasks)


def test_a_woken_watch_gets_exactly_the_headers_and_body_of_a_fresh_answer(watch_server):  # noqa: F811
    planner = make_planner(tags=["a"], metadata={"zone": "z1"})
    _, token = make_read_key()
    auth = {"X-Consul-Token": token, "Authorization": f"Token {token}"}

    def fresh(path: str, params: dict) -> requests.Response:
        return requests.get(watch_server.url + path, params=params, headers=auth, timeout=10)

    indexes = {}
    for path, params in PATHS:
        first = fresh(path, params)
        indexes[path] = int(first.headers.get("X-Consul-Index") or first.headers["X-Registry-Index"])

    def change() -> None:
        Service.objects.filter(pk=planner.pk).update(status=HealthStatus.WARNING)
        connection.close()  # this thread's connection, before the test database is dropped

    woken = asyncio.run(_woken(watch_server.url, token, indexes, change))
    time.sleep(0.1)
    for path, params, status, headers, body in woken:
        answer = fresh(path, params)
        expected = [(name.lower(), value) for name, value in answer.raw.headers.items() if name.lower() != "date"]
        assert (status, headers, body) == (answer.status_code, expected, answer.content), path
        index = dict(headers).get("x-consul-index") or dict(headers)["x-registry-index"]
        assert int(index) > indexes[path], (path, index)
    names = {name for _, _, _, headers, _ in woken for name, _ in headers}
    assert {"x-consul-index", "x-consul-knownleader", "x-consul-lastcontact", "x-registry-index",
            "content-type", "x-content-type-options", "referrer-policy"} <= names, names


@override_settings(**WATCH_SERVER)
def test_watches_answered_at_the_same_index_share_one_rendering(transactional_db, monkeypatch):
    """Django's response building and header encoding run once for them all, not once each."""
    from berrys_portal.asgi_watch import WatchASGIHandler

    make_planner()
    _, token = make_read_key()
    rendered: list[int] = []
    real = WatchASGIHandler.send_response

    async def counting(self, response, send):
        rendered.append(response.status_code)
        return await real(self, response, send)

    monkeypatch.setattr(WatchASGIHandler, "send_response", counting)
    handler = WatchASGIHandler()

    async def get(path: str, query: str) -> tuple[dict, bytes]:
        sent = await asgi_get(handler, path, query, headers=[(b"x-consul-token", token.encode()),
                                                             (b"authorization", f"Token {token}".encode())])
        return sent[0], b"".join(m.get("body", b"") for m in sent[1:])

    async def scenario():
        fresh = {path: await get(path, query) for path, query in
                 [("/v1/health/service/PLANNING_SYSTEM", ""), ("/discovery/PLANNING_SYSTEM", "all=1")]}
        rendered.clear()
        answers = {}
        for path, query in [("/v1/health/service/PLANNING_SYSTEM", ""), ("/discovery/PLANNING_SYSTEM", "all=1")]:
            start = {name.lower(): value for name, value in fresh[path][0]["headers"]}
            index = int(start.get(b"x-consul-index") or start[b"x-registry-index"])
            # An older index: every one answers at once (as when a change woke them), from one response.
            answers[path] = await asyncio.gather(*(get(path, f"{query}&index={index - 1}&wait=5s".lstrip("&"))
                                                   for _ in range(5)))
        return fresh, answers

    fresh, answers = asyncio.run(scenario())
    connection.close()
    assert rendered == [200, 200], rendered  # one per path, not one per watch
    for path, sent in answers.items():
        assert {(start["status"], tuple(start["headers"]), body) for start, body in sent} == {
            (fresh[path][0]["status"], tuple(fresh[path][0]["headers"]), fresh[path][1])}


@override_settings(**WATCH_SERVER, API_KEY_CACHE_SECONDS=60)
def test_a_consul_query_with_its_key_in_memory_is_authorized_in_the_loop_and_a_revoked_key_still_refused(
        transactional_db, monkeypatch):
    from registry import consul_views

    make_planner()
    api_key, token = make_read_key()
    hops: list[str] = []
    real = consul_views._authorize

    def spy(request):
        hops.append(request.path)
        try:
            return real(request)
        finally:
            connection.close()  # an executor thread: not kept past the test

    monkeypatch.setattr(consul_views, "_authorize", spy)

    async def get():
        return await AsyncClient().get("/v1/health/service/PLANNING_SYSTEM", headers={"X-Consul-Token": token})

    def revoke() -> None:
        api_key_revoke(keys=ApiKey.objects.filter(pk=api_key.pk))
        connection.close()

    async def scenario():
        answers = [await get() for _ in range(4)]
        hopped = len(hops)
        await asyncio.to_thread(revoke)
        return answers, hopped, await get()

    answers, hopped, after_revocation = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [200] * 4
    assert hopped == 1, hops  # the first read the key (and recorded its use); the others did not hop
    assert after_revocation.status_code == 403  # revoking drops the cached copy: read again, refused


def test_the_watch_server_freezes_its_startup_objects_out_of_the_collector():
    import subprocess
    import sys

    from tests.registry.health_fixtures import subprocess_env

    env = dict(subprocess_env(), DJANGO_SETTINGS_MODULE="berrys_portal.settings_watch")
    out = subprocess.run([sys.executable, "-c", "import gc, berrys_portal.asgi_watch; print(gc.get_freeze_count())"],
                         env=env, capture_output=True, text=True, check=True, timeout=60)
    assert int(out.stdout.strip().splitlines()[-1]) > 10_000, out.stdout
