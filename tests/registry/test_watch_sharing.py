"""What a change that wakes many watches costs: one hand-over per event loop, one answer per index."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import AsyncClient, override_settings

from registry import watch_views
from registry.auth import api_key_revoke
from registry.models import ApiKey
from registry.watch import INDEX_HEADER, IndexFeed
from tests.registry.watch_setup import WATCH_SERVER, make_planner, make_read_key

pytestmark = [pytest.mark.usefixtures("fresh_index_feed")]


class _CountingLoop(asyncio.SelectorEventLoop):
    handovers = 0

    def call_soon_threadsafe(self, *args, **kwargs):
        type(self).handovers += 1
        return super().call_soon_threadsafe(*args, **kwargs)


def test_one_change_wakes_every_watcher_of_a_loop_with_one_handover(transactional_db):
    feed = IndexFeed()
    try:
        async def scenario() -> list[int]:
            feed.start()
            after = feed.current()
            waiters = [asyncio.ensure_future(feed.wait_async(after=after, service_type=None, timeout=30))
                       for _ in range(200)]
            await asyncio.sleep(0.2)
            assert feed.watcher_count() == 200
            _CountingLoop.handovers = 0
            publisher = threading.Thread(target=feed._publish, args=(after + 1, dict(feed.state.types)))
            publisher.start()
            results = await asyncio.wait_for(asyncio.gather(*waiters), 10)
            publisher.join()
            return results

        loop = _CountingLoop()
        try:
            results = loop.run_until_complete(scenario())
        finally:
            loop.close()
        assert len(results) == 200 and len(set(results)) == 1
        assert _CountingLoop.handovers == 1
    finally:
        feed.stop()
        if feed._thread is not None:
            feed._thread.join(5)


@pytest.fixture
def calls(monkeypatch):
    """How many times the native watch asked its DRF view (a spy: the view still runs)."""
    seen: list[str] = []
    real = watch_views._call

    def spy(view, request, kwargs):
        seen.append(request.path)
        try:
            return real(view, request, kwargs)
        finally:
            connection.close()  # an executor thread of this test's loop: not kept past the test

    monkeypatch.setattr(watch_views, "_call", spy)
    return seen


@override_settings(**WATCH_SERVER)
def test_watchers_opening_at_the_same_index_share_one_answer(transactional_db, calls):
    make_planner()
    _, key = make_read_key()

    async def scenario() -> list:
        client, auth = AsyncClient(), {"Authorization": f"Token {key}"}
        first = await client.get("/discovery/PLANNING_SYSTEM", {"all": "1"}, headers=auth)
        index = int(first.headers[INDEX_HEADER])
        calls.clear()
        # An older index: every one answers at once, from one computation.
        return await asyncio.gather(*(client.get("/discovery/PLANNING_SYSTEM",
                                                 {"all": "1", "index": index - 1, "wait": "5s"}, headers=auth)
                                      for _ in range(30)))

    answers = asyncio.run(scenario())
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert len(calls) == 1, calls


@override_settings(**WATCH_SERVER)
def test_a_shared_answer_is_not_reused_past_a_second_so_a_revoked_key_is_refused(transactional_db, calls):
    make_planner()
    api_key, key = make_read_key()

    auth = {"Authorization": f"Token {key}"}

    async def get(index: int):
        return await AsyncClient().get("/discovery/PLANNING_SYSTEM", {"all": "1", "index": index, "wait": "5s"},
                                       headers=auth)

    async def scenario():
        first = await AsyncClient().get("/discovery/PLANNING_SYSTEM", {"all": "1"}, headers=auth)
        index = int(first.headers[INDEX_HEADER])
        shared = await get(index - 1)
        def revoke() -> None:
            api_key_revoke(keys=ApiKey.objects.filter(pk=api_key.pk))
            connection.close()

        await sync_to_async(revoke, thread_sensitive=False)()
        time.sleep(watch_views.SHARE_SECONDS + 0.1)
        return shared, await get(index - 1)

    shared, after_revocation = asyncio.run(scenario())
    assert shared.status_code == 200
    assert after_revocation.status_code == 401
