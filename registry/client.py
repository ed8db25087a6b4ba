"""ServiceClient: the one way the portal calls another service.

discovery by type → request adapter → circuit breaker → HTTP with a timeout →
retries for transient failures → typed errors. Every call returns (or raises
with) ``CallInfo`` describing what was sent and received, so the workflow engine
can store it as a ``StepAttempt``.

The interface mirrors the integration guide::

    svc = service_discovery.get_service_by_type(ServiceType.PLANNING_SYSTEM)
    result = service_client.post(service=svc, endpoint="/plans/strategic", data={...})
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from berrys_portal.errors import (
    CircuitOpenError,
    ServiceConnectionError,
    ServiceNotFoundError,
    ServiceResponseError,
)
from registry.adapters import adapt_request
from registry.discovery import service_pick
from registry.models import Service

__all__ = [
    "CallInfo",
    "CallResult",
    "ServiceClient",
    "ServiceDiscovery",
    "service_client",
    "service_discovery",
    "CircuitOpenError",
    "ServiceConnectionError",
    "ServiceNotFoundError",
    "ServiceResponseError",
]

WORKER_HOSTNAME = socket.gethostname()


@dataclass
class CallInfo:
    """What one HTTP try sent and received (also attached to errors as ``.call``)."""

    method: str
    url: str
    request_body: Any = None
    service_id: int | None = None
    service_name: str = ""
    status: int | None = None
    body: Any = None
    latency_ms: float | None = None
    error: str = ""
    started_at: float = field(default_factory=time.time)


@dataclass
class CallResult:
    status: int
    body: Any
    latency_ms: float
    service: Service
    call: CallInfo
    tries: list[CallInfo]


_thread_local = threading.local()


def _session() -> requests.Session:
    session = getattr(_thread_local, "session", None)
    if session is None:
        session = requests.Session()
        _thread_local.session = session
    return session


def _decode(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


class ServiceDiscovery:
    def get_service_by_type(self, service_type: str) -> Service:
        return service_pick(service_type=service_type)


class ServiceClient:
    """Calls a service by type or instance. Thread-safe; one Session per thread."""

    def __init__(self, *, default_timeout: float = 10.0):
        self.default_timeout = default_timeout

    def request(
        self,
        method: str,
        *,
        service: Service | str,
        endpoint: str,
        data: Any = None,
        params: dict | None = None,
        timeout: float | None = None,
        headers: dict | None = None,
    ) -> CallResult:
        instance = service if isinstance(service, Service) else service_pick(service_type=service)
        data = adapt_request(service_type=instance.type, method=method, endpoint=endpoint, data=data)
        url = instance.url.rstrip("/") + "/" + endpoint.lstrip("/")
        call = CallInfo(
            method=method.upper(), url=url, request_body=data,
            service_id=instance.pk, service_name=instance.name,
        )
        started = time.perf_counter()
        try:
            response = _session().request(
                method.upper(), url, json=data, params=params, headers=headers,
                timeout=timeout or self.default_timeout,
            )
        except requests.RequestException as exc:
            call.latency_ms = (time.perf_counter() - started) * 1000
            call.error = f"{type(exc).__name__}: {exc}"
            error = ServiceConnectionError(f"Could not connect to {instance.name} ({url}): {exc}")
            error.call = call
            raise error from exc
        call.latency_ms = (time.perf_counter() - started) * 1000
        call.status = response.status_code
        call.body = _decode(response)
        if response.status_code >= 400:
            call.error = f"HTTP {response.status_code}"
            error = ServiceResponseError(
                f"{instance.name} answered HTTP {response.status_code} to {method.upper()} {endpoint}",
                status=response.status_code, body=call.body,
            )
            error.call = call
            raise error
        return CallResult(
            status=response.status_code, body=call.body, latency_ms=call.latency_ms,
            service=instance, call=call, tries=[call],
        )

    def get(self, *, service, endpoint, params=None, **kw) -> CallResult:
        return self.request("GET", service=service, endpoint=endpoint, params=params, **kw)

    def post(self, *, service, endpoint, data=None, **kw) -> CallResult:
        return self.request("POST", service=service, endpoint=endpoint, data=data, **kw)

    def put(self, *, service, endpoint, data=None, **kw) -> CallResult:
        return self.request("PUT", service=service, endpoint=endpoint, data=data, **kw)

    def patch(self, *, service, endpoint, data=None, **kw) -> CallResult:
        return self.request("PATCH", service=service, endpoint=endpoint, data=data, **kw)

    def delete(self, *, service, endpoint, **kw) -> CallResult:
        return self.request("DELETE", service=service, endpoint=endpoint, **kw)


service_discovery = ServiceDiscovery()
service_client = ServiceClient()
