"""Discovery with a local cache kept fresh by the portal's blocking watch."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from typing import Any

import httpx

from berrys_client.errors import ServiceNotFoundError

logger = logging.getLogger("berrys_client")
INDEX_HEADER = "X-Registry-Index"
Instance = dict[str, Any]


class ServiceDiscovery:
    """``await get_service_by_type(ServiceType.PLANNING_SYSTEM)`` -> one instance (a dict, as the
    portal's ``GET /discovery/{type}`` answers it), rotating within the healthiest tier.

    The first call for a type asks the portal (``GET /discovery/{type}?all=1``) and starts a
    background watch (the same URL with ``index`` and ``wait``): the cache follows the
    registry within the watch's round trip, and a call never waits for the portal after the
    first one. ``watch_url`` can point the watches at the portal's watch server.
    """

    def __init__(self, portal_url: str, api_key: str, *, watch_url: str | None = None,
                 watch_wait: str = "60s", timeout: float = 10.0) -> None:
        self.portal_url = portal_url.rstrip("/")
        self.watch_url = (watch_url or portal_url).rstrip("/")
        self.api_key = api_key
        self.watch_wait = watch_wait
        self.timeout = timeout
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
            self._http = httpx.AsyncClient(headers={"Authorization": f"Token {self.api_key}"},
                                           follow_redirects=False)
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

    async def _fetch(self, service_type: str, *, index: int, wait: str | None, base: str) -> bool:
        params: dict[str, str] = {"all": "1"}
        if index:
            params.update(index=str(index), wait=wait or self.watch_wait)
        timeout = self.timeout + (_seconds(wait or self.watch_wait) * 17 / 16 if index else 0)
        response = await self.http.get(f"{base}/discovery/{service_type}", params=params, timeout=timeout)
        new_index = int(response.headers.get(INDEX_HEADER, "0") or 0)
        changed = new_index != self._index.get(service_type)
        self._index[service_type] = new_index
        if response.status_code == 200:
            self._instances[service_type] = response.json()["services"]
            self._reasons.pop(service_type, None)
        elif response.status_code in (404, 503):
            self._instances[service_type] = []
            self._reasons[service_type] = _detail(response)
        else:
            response.raise_for_status()
        if changed:
            self._forgotten.clear()
        return changed

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
