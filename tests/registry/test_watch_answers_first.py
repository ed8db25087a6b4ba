"""Answers first: requests arriving while woken watches are being answered wait for them (``answer_gate``)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
import requests
from django.db import connection
from django.test import override_settings

from berrys_portal import answer_gate as gates
from berrys_portal.answer_gate import AnswerGate, answer_gate
from registry.models import HealthStatus, Service
from tests.registry.test_watch_server import watch_server  # noqa: F401 - the fixture
from tests.registry.watch_setup import WATCH_SERVER, asgi_get, make_planner, make_read_key

WOKEN = 5


def test_a_request_passes_the_gate_only_once_every_woken_watch_is_answered():
    async def scenario():
        gate = AnswerGate()
        await asyncio.wait_for(gate.passage(), 0.1)  # nothing woken: no wait
        gate.owe(2)
        waiting = asyncio.create_task(gate.passage())
        await asyncio.sleep(0.05)
        held = not waiting.done()
        gate.settle(1)
        await asyncio.sleep(0.05)
        held_after_one = not waiting.done()
        gate.settle(1)
        await asyncio.wait_for(waiting, 0.1)
        return held, held_after_one, gate.pending

    assert asyncio.run(scenario()) == (True, True, 0)


def test_the_gate_opens_by_itself_after_its_bound_when_a_count_is_lost(monkeypatch):
    monkeypatch.setattr(gates, "HOLD_MAX_SECONDS", 0.1)

    async def scenario():
        gate = AnswerGate()
        gate.owe(1)  # never settled
        started = time.monotonic()
        await gate.passage()
        held = time.monotonic() - started
        started = time.monotonic()
        await gate.passage()  # the count was reset: the next request does not wait again
        return held, time.monotonic() - started, gate.pending

    held, again, pending = asyncio.run(scenario())
    assert 0.09 <= held < 1.0 and again < 0.05 and pending == 0, (held, again, pending)


@override_settings(**WATCH_SERVER)
@pytest.mark.usefixtures("fresh_index_feed")
def test_a_request_arriving_during_a_wake_up_is_answered_after_the_woken_watches(transactional_db, monkeypatch):
    """The woken watches' shared answer is slow here (0.3 s): without the gate the new request would pass them."""
    from berrys_portal.asgi_watch import WatchASGIHandler
    from registry import consul_views

    planner = make_planner()
    _, token = make_read_key()
    real = consul_views._compute

    def slow_for_the_planners(service_type, build):
        if service_type == "PLANNING_SYSTEM":
            time.sleep(0.3)
        try:
            return real(service_type, build)
        finally:
            connection.close()  # an executor thread: not kept past the test

    handler = WatchASGIHandler()
    order: list[str] = []

    async def get(label: str, path: str, query: str = "") -> tuple[int, dict]:
        sent = await asgi_get(handler, path, query, headers=[(b"x-consul-token", token.encode())],
                              on_start=lambda: order.append(label))
        return sent[0]["status"], {name.lower(): value for name, value in sent[0]["headers"]}

    def change() -> None:
        Service.objects.filter(pk=planner.pk).update(status=HealthStatus.WARNING)
        connection.close()

    async def scenario():
        _, headers = await get("first", "/v1/health/service/PLANNING_SYSTEM")
        index = int(headers[b"x-consul-index"])
        monkeypatch.setattr(consul_views, "_compute", slow_for_the_planners)
        woken = [asyncio.create_task(get("woken", "/v1/health/service/PLANNING_SYSTEM", f"index={index}&wait=30s"))
                 for _ in range(WOKEN)]
        await asyncio.sleep(0.5)  # all waiting
        await asyncio.to_thread(change)
        gate = answer_gate()
        for _ in range(5000):
            if gate.pending:
                break
            await asyncio.sleep(0.001)
        engaged = gate.pending
        late = await get("late", "/v1/catalog/services")
        answers = await asyncio.gather(*woken)
        return index, engaged, late, answers, gate.pending

    index, engaged, late, answers, pending = asyncio.run(scenario())
    connection.close()
    assert engaged == WOKEN
    assert order == ["first"] + ["woken"] * WOKEN + ["late"], order
    assert late[0] == 200
    assert all(status == 200 and int(headers[b"x-consul-index"]) > index for status, headers in answers)
    assert pending == 0  # every woken watch settled its count


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_index_feed")
def test_watchers_re_opening_at_once_after_each_change_miss_none_and_the_server_is_not_held(
        watch_server):  # noqa: F811
    planner = make_planner()
    _, token = make_read_key()
    auth = {"X-Consul-Token": token, "Authorization": f"Token {token}"}
    first = requests.get(watch_server.url + "/v1/health/service/PLANNING_SYSTEM", headers=auth, timeout=10)
    start = int(first.headers["X-Consul-Index"])
    changes = 3

    def change(status: str) -> None:
        Service.objects.filter(pk=planner.pk).update(status=status)
        connection.close()  # this thread's connection, before the test database is dropped

    async def scenario():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def follow(i: int) -> list[int]:
                path = "/v1/health/service/PLANNING_SYSTEM" if i % 2 else "/discovery/PLANNING_SYSTEM"
                seen, index = [], start
                while len(seen) < changes:  # re-open as soon as the answer is in
                    params = {"index": str(index), "wait": "60s", **({} if i % 2 else {"all": "1"})}
                    async with session.get(watch_server.url + path, params=params, headers=auth) as response:
                        await response.read()
                        assert response.status == 200
                        index = int(response.headers.get("X-Consul-Index") or response.headers["X-Registry-Index"])
                        if index > (seen[-1] if seen else start):
                            seen.append(index)
                return seen

            followers = [asyncio.create_task(follow(i)) for i in range(100)]
            for n in range(changes):
                await asyncio.sleep(1.0)
                await asyncio.to_thread(change, HealthStatus.WARNING if n % 2 == 0 else HealthStatus.PASSING)
            seen = await asyncio.wait_for(asyncio.gather(*followers), 30)
            await asyncio.sleep(0.5)
            started = time.monotonic()  # after the wake-ups: nothing holds a new request
            async with session.get(watch_server.url + "/v1/catalog/services", headers=auth) as response:
                await response.read()
            return seen, time.monotonic() - started

    seen, fresh = asyncio.run(scenario())
    assert all(len(indexes) == changes for indexes in seen)
    assert len({tuple(indexes) for indexes in seen}) == 1, {tuple(indexes) for indexes in seen}  # the same three
    assert fresh < 0.5, fresh
