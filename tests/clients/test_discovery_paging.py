"""clients/python's discovery reads every page of the portal's paged list (live portal)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from berrys_client import ServiceDiscovery, ServiceType
from django.db import connection

from registry.auth import api_key_create
from registry.models import HealthStatus, Service

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_index_feed")]

PLANNING = ServiceType.PLANNING_SYSTEM


@pytest.fixture
def key(transactional_db) -> str:
    return api_key_create(name="planning-reader", scopes=["registry:read"])[1]


def _in_db(fn):
    def run():
        try:
            return fn()
        finally:
            connection.close()
    return asyncio.to_thread(run)


def _planners(first: int, count: int) -> None:
    # Never called: the discovery only lists them (ports in this suite's loopback range).
    Service.objects.bulk_create([
        Service(name=f"planner-{i:04}", type=PLANNING, url=f"http://127.0.0.1:{20000 + i}",
                status=HealthStatus.PASSING)
        for i in range(first, first + count)
    ])


async def _until(predicate, timeout: float = 5.0) -> None:
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < timeout, "the watch did not bring the change"
        await asyncio.sleep(0.02)


def test_it_sees_every_instance_of_a_type_spread_over_several_pages(live_server, key):
    _planners(0, 8)

    async def scenario():
        discovery = ServiceDiscovery(live_server.url, key, page_size=3, watch_wait="20s")
        try:
            names = {i["name"] for i in await discovery.get_services_by_type(PLANNING)}
            assert names == {f"planner-{i:04}" for i in range(8)}  # pages of 3, 3 and 2
            picks = {(await discovery.get_service_by_type(PLANNING))["name"] for _ in range(8)}
            assert len(picks) == 8  # the rotation reaches the instances of the last page too
            await asyncio.sleep(0.3)  # the watch is waiting at the portal
            # The watch brings changes to every page: one more (a fourth page), one fewer.
            await _in_db(lambda: _planners(8, 2))

            async def ten():
                return len(await discovery.get_services_by_type(PLANNING)) == 10
            await _until(ten)
            await _in_db(lambda: Service.objects.filter(name="planner-0000").update(status=HealthStatus.CRITICAL))

            async def nine_without_the_first():
                names = {i["name"] for i in await discovery.get_services_by_type(PLANNING)}
                return len(names) == 9 and "planner-0000" not in names
            await _until(nine_without_the_first)
        finally:
            await discovery.close()

    asyncio.run(scenario())


def test_the_default_page_size_reads_more_instances_than_the_portal_pages(live_server, key):
    _planners(0, 520)
    # The premise: the portal answers at most 500 a page, whatever is asked.
    first = httpx.get(f"{live_server.url}/discovery/{PLANNING}", params={"all": "1", "page_size": "1000"},
                      headers={"Authorization": f"Token {key}"}, timeout=30).json()
    assert first["count"] == 520 and len(first["services"]) == 500 and first["next"]

    async def scenario():
        discovery = ServiceDiscovery(live_server.url, key, timeout=30)
        try:
            instances = await discovery.get_services_by_type(PLANNING)
            assert len(instances) == 520
            assert len({i["id"] for i in instances}) == 520
        finally:
            await discovery.close()

    asyncio.run(scenario())
