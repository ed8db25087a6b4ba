"""Discovery with a local cache kept fresh by the portal's blocking watch."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from typing import Any

import httpx

from berrys_client.errors import ServiceNotFoundError
from berrys_client.version import USER_AGENT

logger = logging.getLogger("berrys_client")
INDEX_HEADER = "X-Registry-Index"
READ_TRIES = 3  # reads of a paged list from page 1 when the registry changes while paging
Instance = dict[str, Any]


class ServiceDiscovery:
    """``await get_service_by_type(ServiceType.PLANNING_SYSTEM)`` -> one instance (a dict, as the
    portal's ``GET /discovery/{type}`` answers it), rotating within the healthiest tier.

    The first call for a type asks the portal (``GET /discovery/{type}?all=1``) and starts a
    background watch (the same URL with ``index`` and ``wait``): the cache follows the
    registry within the watch's round trip, and a call never waits for the portal after the
    first one. ``watch_url`` can point the watches at the portal's watch server. The list is
    paged by the portal: every page is read (``page_size`` instances a request, default 500,
    the portal's largest), so a type with more instances than a page is seen whole.
    """

    def __init__(self, portal_url: str, api_key: str, *, watch_url: str | None = None,
                 watch_wait: str = "60s", timeout: float = 10.0, page_size: int = 500) -> None:
        self.portal_url = portal_url.rstrip("/")
        self.watch_url = (watch_url or portal_url).rstrip("/")
        self.api_key = api_key
        self.watch_wait = watch_wait
        self.timeout = timeout
        self.page_size = page_size
        self._http: httpx.AsyncClient | None = None
        self._instances: dict[str, list[Instance]] = {}
        self._reasons: dict[str, str] = {}
        self._index: dict[str, int] = {}
        self._watches: dict[str, asyncio.Task] = {}
        self._forgotten: set[int] = set()
        self._counters: dict[str, itertools.count] = {}
        self.updates = 0  # how many times a watch brought a change (for tests and logs)

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False, headers={
                "Authorization": f"Token {self.api_key}", "User-Agent": USER_AGENT})
        return self._http

    async def get_services_by_type(self, service_type: str) -> list[Instance]:
        """Every eligible instance, best tier first; ServiceNotFoundError when there is none."""
        if service_type not in self._instances:
            await self._fetch(service_type, index=0, wait=None, base=self.portal_url)
            self._watches[service_type] = asyncio.create_task(self._watch(service_type))
        instances = [i for i in self._instances[service_type] if i["id"] not in self._forgotten]
        if not instances:
            raise ServiceNotFoundError(self._reasons.get(service_type) or f"No service of type {service_type} found")
        return instances

    async def get_service_by_type(self, service_type: str) -> Instance:
        instances = await self.get_services_by_type(service_type)
        tier = [i for i in instances if i.get("status") == instances[0].get("status")]
        counter = self._counters.setdefault(service_type, itertools.count())
        return tier[next(counter) % len(tier)]

    def forget(self, instance: Instance) -> None:
        """Stop offering an instance that refused a connection, until the registry changes."""
        self._forgotten.add(instance["id"])

    async def _page(self, service_type: str, *, page: int, index: int = 0, wait: str | None = None,
                    base: str | None = None) -> httpx.Response:
        params: dict[str, str] = {"all": "1", "page_size": str(self.page_size)}
        if page > 1:
            params["page"] = str(page)
        if index:
            params.update(index=str(index), wait=wait or self.watch_wait)
        timeout = self.timeout + (_seconds(wait or self.watch_wait) * 17 / 16 if index else 0)
        return await self.http.get(f"{base or self.portal_url}/discovery/{service_type}", params=params,
                                   timeout=timeout)

    async def _fetch(self, service_type: str, *, index: int, wait: str | None, base: str) -> bool:
        """Read every page of ``GET /discovery/{type}?all=1`` (the first one as a watch when
        ``index`` is set); True when the registry's index for the type moved.

        The portal pages the list (``page``, ``page_size``, a ``next`` link while more follow).
        Later pages are read without waiting, and each carries the index it was answered at: a
        page at another index than the first means the registry changed while we read, so the
        list is read again from page 1 (a few times at most). If it still moves, the list is kept
        with the first page's index, which makes the next watch return at once and read again.
        """
        response = await self._page(service_type, page=1, index=index, wait=wait, base=base)
        for attempt in range(READ_TRIES):
            first_index = _index_of(response)
            instances, consistent = await self._rest(service_type, response, first_index)
            if consistent or attempt == READ_TRIES - 1:
                break
            response = await self._page(service_type, page=1)
        changed = first_index != self._index.get(service_type)
        self._index[service_type] = first_index
        if response.status_code == 200:
            self._instances[service_type] = instances
            self._reasons.pop(service_type, None)
        elif response.status_code in (404, 503):
            self._instances[service_type] = []
            self._reasons[service_type] = _detail(response)
        else:
            response.raise_for_status()
        if changed:
            self._forgotten.clear()
        return changed

    async def _rest(self, service_type: str, first: httpx.Response, first_index: int) -> tuple[list[Instance], bool]:
        """The first page's instances and every later page's (following ``next``); and whether
        every page was answered at the first page's index."""
        if first.status_code != 200:
            return [], True
        body = first.json()
        instances: list[Instance] = list(body["services"])
        seen = {i.get("id") for i in instances}
        page = 1
        while body.get("next"):
            page += 1
            response = await self._page(service_type, page=page)
            if response.status_code != 200 or _index_of(response) != first_index:
                return instances, False  # changed meanwhile (fewer pages now, or other rows)
            body = response.json()
            for instance in body["services"]:
                if instance.get("id") not in seen:  # rows shift between pages when one is removed
                    seen.add(instance.get("id"))
                    instances.append(instance)
        return instances, True

    async def _watch(self, service_type: str) -> None:
        delay = 1.0
        while True:
            try:
                if await self._fetch(service_type, index=self._index.get(service_type, 0), wait=self.watch_wait,
                                     base=self.watch_url):
                    self.updates += 1
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the portal may be restarting: back off, keep the cache
                logger.warning("discovery watch for %s failed (%s); retrying in %.0f s", service_type, exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        for task in self._watches.values():
            task.cancel()
        await asyncio.gather(*self._watches.values(), return_exceptions=True)
        self._watches.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _index_of(response: httpx.Response) -> int:
    return int(response.headers.get(INDEX_HEADER, "0") or 0)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail") or response.text)
    except ValueError:
        return response.text


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if duration.endswith(unit) and duration[: -len(unit)].replace(".", "", 1).isdigit():
            return float(duration[: -len(unit)]) * units[unit]
    raise ValueError(f"wait must look like 30s, 5m or 500ms, not {duration!r}")
