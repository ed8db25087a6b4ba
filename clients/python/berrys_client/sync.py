"""The sync twin: the same objects, run on one private event loop in a background thread.

For Flask / Django services: ``SyncServiceDiscovery(...).get_service_by_type(...)``,
``SyncServiceClient(discovery).post(service=..., endpoint=..., data=...)``,
``SyncServiceRegistration(...).start()`` / ``.stop()`` (``start(retry=True)`` waits for the
portal). The discovery watches and the
heartbeat keep running on that loop between calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from berrys_client.client import ServiceClient
from berrys_client.discovery import Instance, ServiceDiscovery
from berrys_client.registration import ServiceRegistration

T = TypeVar("T")
_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="berrys-client", daemon=True).start()
    return asyncio.run_coroutine_threadsafe(coro, _loop).result()


class SyncServiceDiscovery:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.inner = ServiceDiscovery(*args, **kwargs)

    def get_service_by_type(self, service_type: str) -> Instance:
        return _run(self.inner.get_service_by_type(service_type))

    def get_services_by_type(self, service_type: str) -> list[Instance]:
        return _run(self.inner.get_services_by_type(service_type))

    def close(self) -> None:
        _run(self.inner.close())


class SyncServiceClient:
    def __init__(self, discovery: SyncServiceDiscovery | None = None, **kwargs: Any) -> None:
        self.inner = ServiceClient(discovery.inner if discovery else None, **kwargs)

    def request(self, method: str, url: str | None = None, **kw: Any) -> Any:
        return _run(self.inner.request(method, url, **kw))

    def get(self, url: str | None = None, **kw: Any) -> Any:
        return self.request("GET", url, **kw)

    def post(self, url: str | None = None, **kw: Any) -> Any:
        return self.request("POST", url, **kw)

    def put(self, url: str | None = None, **kw: Any) -> Any:
        return self.request("PUT", url, **kw)

    def patch(self, url: str | None = None, **kw: Any) -> Any:
        return self.request("PATCH", url, **kw)

    def delete(self, url: str | None = None, **kw: Any) -> Any:
        return self.request("DELETE", url, **kw)

    def close(self) -> None:
        _run(self.inner.close())


class SyncServiceRegistration:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.inner = ServiceRegistration(*args, **kwargs)

    @property
    def service_id(self) -> int | None:
        return self.inner.service_id

    def start(self, *, retry: bool = False, max_backoff: float = 5.0) -> int:
        """Register (blocking this thread); with ``retry``, until the portal answers or ``stop()``
        is called from another thread (then ``concurrent.futures.CancelledError`` is raised)."""
        return _run(self.inner.start(retry=retry, max_backoff=max_backoff))

    def stop(self) -> None:
        _run(self.inner.stop())

    def __enter__(self) -> SyncServiceRegistration:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
