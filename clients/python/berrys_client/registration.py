"""Register on start-up, heartbeat on a background task, deregister on shutdown."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import httpx

from berrys_client.errors import ServiceConnectionError, ServiceResponseError
from berrys_client.version import USER_AGENT

logger = logging.getLogger("berrys_client")
_waiting_for: set[str] = set()  # portals a "waiting for the portal" line was logged for (one line, not one per service)


class ServiceRegistration:
    """The guide's registration payload, kept alive for the life of the service.

    ``async with ServiceRegistration(portal, key, name=..., type=..., url=..., ttl_seconds=30):``
    registers (``POST /registry/services``, an idempotent upsert on name + url), heartbeats
    every ``ttl_seconds / 3`` (``PUT .../heartbeat``; registers again if the portal has
    dropped the instance), and deregisters on exit. Without ``ttl_seconds`` the portal
    probes ``health_url`` instead and no heartbeat is sent (unless ``heartbeat_interval``
    is given). ``start(retry=True)`` waits for a portal that is not up yet (a service often
    starts first): it tries again with capped exponential backoff and jitter while the portal
    is unreachable or answers 429 / 5xx; a refusal (other 4xx) still raises at once.
    ``stop()`` also ends a ``start`` still waiting.
    """

    def __init__(self, portal_url: str, api_key: str, *, name: str, type: str, url: str,  # noqa: A002
                 health_url: str | None = None, metadata: dict[str, Any] | None = None,
                 ttl_seconds: int | None = None, heartbeat_interval: float | None = None,
                 timeout: float = 10.0, **fields: Any) -> None:
        self.portal_url = portal_url.rstrip("/")
        self.api_key = api_key
        self.payload: dict[str, Any] = {"name": name, "type": type, "url": url, **fields}
        if health_url:
            self.payload["health_url"] = health_url
        if metadata is not None:
            self.payload["metadata"] = metadata
        if ttl_seconds:
            self.payload["ttl_seconds"] = ttl_seconds
        self.heartbeat_interval = heartbeat_interval or (ttl_seconds / 3 if ttl_seconds else None)
        self.timeout = timeout
        self.service_id: int | None = None
        self.heartbeats = 0
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task | None = None
        self._starting: asyncio.Task | None = None
        # Held for a whole heartbeat (and the re-registration a 404 triggers): ``stop`` takes
        # it before cancelling, so it never cancels a registration the portal has already
        # written but whose id this object has not read yet (that left a ghost instance).
        self._beating: asyncio.Lock | None = None

    async def start(self, *, retry: bool = False, max_backoff: float = 5.0) -> int:
        self._starting = asyncio.current_task()
        try:
            if self._http is None:
                self._http = httpx.AsyncClient(timeout=self.timeout, headers={
                    "Authorization": f"Token {self.api_key}", "User-Agent": USER_AGENT})
            delay = 0.2
            while True:
                try:
                    await self._register()
                    break
                except (ServiceConnectionError, ServiceResponseError) as exc:
                    status = getattr(exc, "status", None)
                    if not retry or (status is not None and status < 500 and status != 429):
                        raise
                    self._log_waiting(exc)
                    await asyncio.sleep(random.uniform(0, delay) + 0.1)
                    delay = min(delay * 2, max_backoff)
        finally:
            self._starting = None
        _waiting_for.discard(self.portal_url)
        if self.heartbeat_interval and self._task is None:
            self._task = asyncio.create_task(self._beat())
        return self.service_id  # type: ignore[return-value]

    def _log_waiting(self, exc: Exception) -> None:
        if self.portal_url in _waiting_for:
            logger.debug("%s: the portal is not answering yet (%s)", self.payload["name"], exc)
        else:
            _waiting_for.add(self.portal_url)
            logger.info("waiting for the portal at %s to register (%s)", self.portal_url, exc)

    async def _register(self) -> None:
        assert self._http is not None
        try:
            response = await self._http.post(f"{self.portal_url}/registry/services", json=self.payload)
        except httpx.HTTPError as exc:
            raise ServiceConnectionError(f"Could not reach the portal to register: {exc}") from exc
        if response.status_code not in (200, 201):
            raise ServiceResponseError(f"Registration refused: {response.status_code} {response.text[:300]}",
                                       status=response.status_code, body=response.text)
        self.service_id = response.json()["id"]

    async def heartbeat(self) -> None:
        assert self._http is not None and self.service_id is not None
        response = await self._http.put(f"{self.portal_url}/registry/services/{self.service_id}/heartbeat")
        if response.status_code == 404:  # deregistered meanwhile (e.g. by an operator): come back
            logger.warning("%s: the portal forgot this instance; registering again", self.payload["name"])
            await self._register()
        elif response.status_code >= 400:
            raise ServiceResponseError(f"Heartbeat refused: {response.status_code}", status=response.status_code)
        self.heartbeats += 1

    async def _beat(self) -> None:
        if self._beating is None:
            self._beating = asyncio.Lock()
        while True:
            await asyncio.sleep(self.heartbeat_interval or 10)
            try:
                async with self._beating:
                    await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep beating: the portal may be back next time
                logger.warning("%s: heartbeat failed: %s", self.payload["name"], exc)

    async def stop(self) -> None:
        """Stop heartbeating (and a ``start`` still waiting for the portal), then deregister."""
        starting = self._starting
        if starting is not None and starting is not asyncio.current_task():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        if self._task is not None:
            if self._beating is not None:
                async with self._beating:  # a heartbeat in flight finishes first
                    self._task.cancel()
            else:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._http is not None:
            if self.service_id is not None:
                try:
                    response = await self._http.delete(f"{self.portal_url}/registry/services/{self.service_id}")
                    if response.status_code < 400 or response.status_code == 404:
                        self.service_id = None
                    else:
                        logger.warning("deregistration answered %s", response.status_code)
                except httpx.HTTPError as exc:
                    logger.warning("deregistration failed: %s", exc)
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> ServiceRegistration:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
