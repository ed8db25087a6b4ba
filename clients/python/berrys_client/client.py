"""Calling services: discovery, per-instance breakers, failover, retries with backoff and jitter."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from berrys_client.breaker import CircuitBreaker, critical_breaker, non_critical_breaker
from berrys_client.discovery import Instance, ServiceDiscovery
from berrys_client.errors import CircuitOpenError, ServiceConnectionError, ServiceResponseError
from berrys_client.version import USER_AGENT

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class ServiceClient:
    """``await service_client.post(service=..., endpoint="/plans/strategic", data={...})``.

    ``service`` is an instance from ``ServiceDiscovery`` (tried first) or a service type; the
    other eligible instances of its type are the failover. Each instance has its own breaker
    (the guide's presets by the instance's ``criticality``). Transient failures (connection
    refused or reset, timeout, 408/425/429/5xx) move on to the next instance, and after a
    round of all of them the call is retried after an exponential backoff with jitter, up
    to ``retries`` times. A POST or PATCH is retried only when it carries an
    ``idempotency_key`` (sent as ``Idempotency-Key``, as the portal's engine passes it
    through) or when its connection was refused (nothing was sent). A 4xx other than the
    transient ones raises ``ServiceResponseError`` at once.
    """

    def __init__(self, discovery: ServiceDiscovery | None = None, *, retries: int = 2, backoff: float = 0.2,
                 max_backoff: float = 5.0) -> None:
        self.discovery = discovery
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.breakers: dict[Any, CircuitBreaker] = {}
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False, headers={"User-Agent": USER_AGENT})
        return self._http

    def breaker(self, instance: Instance) -> CircuitBreaker:
        key = instance.get("id") or instance["url"]
        breaker = self.breakers.get(key)
        if breaker is None:
            critical = instance.get("criticality") == "critical"
            breaker = self.breakers[key] = critical_breaker() if critical else non_critical_breaker()
        return breaker

    async def _candidates(self, service: Instance | str) -> list[Instance]:
        if isinstance(service, str):
            if self.discovery is None:
                raise ValueError("service=<type> needs a ServiceDiscovery")
            first = await self.discovery.get_service_by_type(service)
            others = await self.discovery.get_services_by_type(service)
        else:
            first = service
            others = []
            if self.discovery is not None and service.get("type"):
                try:
                    others = await self.discovery.get_services_by_type(service["type"])
                except Exception:  # noqa: BLE001 - the given instance is still worth a try
                    others = []
        return [first, *(i for i in others if i.get("id") != first.get("id"))]

    async def request(self, method: str, url: str | None = None, *, service: Instance | str | None = None,
                      endpoint: str = "", data: Any = None, params: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None, idempotency_key: str | None = None) -> Any:
        method = method.upper()
        headers = dict(headers or {})
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        retry_any = method in IDEMPOTENT_METHODS or bool(idempotency_key)
        if url is not None:
            targets: list[Instance] = [{"url": url, "id": url}]
            endpoint = ""
        elif service is not None:
            targets = await self._candidates(service)
        else:
            raise ValueError("give a url or service=")
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            skipped = 0
            for instance in targets:
                breaker = self.breaker(instance)
                if not breaker.allow():
                    skipped += 1
                    continue
                try:
                    response = await self.http.request(
                        method, instance["url"].rstrip("/") + endpoint if endpoint else instance["url"],
                        json=data, params=params, headers=headers, timeout=breaker.timeout)
                except httpx.ConnectError as exc:  # nothing was sent: safe to try elsewhere
                    breaker.failed()
                    if self.discovery is not None and "type" in instance:
                        self.discovery.forget(instance)
                    last = exc
                    continue
                except httpx.HTTPError as exc:
                    breaker.failed()
                    last = exc
                    if not retry_any:
                        raise ServiceConnectionError(f"{method} {endpoint or url} failed: {exc!r} "
                                                     "(not retried: no Idempotency-Key)") from exc
                    continue
                if response.status_code in TRANSIENT_STATUSES:
                    breaker.failed()
                    last = ServiceConnectionError(f"{instance['url']} answered {response.status_code}")
                    if not retry_any:
                        raise last
                    continue
                breaker.succeeded()
                if response.status_code >= 400:
                    raise ServiceResponseError(
                        f"{method} {endpoint or url} answered {response.status_code}",
                        status=response.status_code, body=_body(response))
                return _body(response)
            if skipped == len(targets):
                raise CircuitOpenError(f"Circuit open for every instance of {_name(service, url)}")
            if attempt < self.retries:
                delay = min(self.backoff * 2 ** attempt, self.max_backoff)
                await asyncio.sleep(random.uniform(delay / 2, delay))  # jitter: callers don't retry in step
        raise ServiceConnectionError(f"Could not reach {_name(service, url)}: {last!r}")

    async def get(self, url: str | None = None, **kw: Any) -> Any:
        return await self.request("GET", url, **kw)

    async def post(self, url: str | None = None, **kw: Any) -> Any:
        return await self.request("POST", url, **kw)

    async def put(self, url: str | None = None, **kw: Any) -> Any:
        return await self.request("PUT", url, **kw)

    async def patch(self, url: str | None = None, **kw: Any) -> Any:
        return await self.request("PATCH", url, **kw)

    async def delete(self, url: str | None = None, **kw: Any) -> Any:
        return await self.request("DELETE", url, **kw)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _name(service: Instance | str | None, url: str | None) -> str:
    if isinstance(service, dict):
        return service.get("type") or service.get("url", "?")
    return service or url or "?"
