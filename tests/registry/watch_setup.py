"""What the watch server's tests share: its settings for in-process tests, the watched service and
a read key, and one GET through an ASGI application in the running event loop without a server
(what they send to ``WatchASGIHandler`` directly)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from registry.auth import api_key_create
from registry.models import ApiKey, HealthStatus, Service

# ``override_settings(**WATCH_SERVER)``: the watch server's URLs and middleware, in this process.
WATCH_SERVER = {"ROOT_URLCONF": "berrys_portal.urls_watch",
                "MIDDLEWARE": ["berrys_portal.middleware_watch.watch_middleware"]}


def make_planner(**fields) -> Service:
    """The passing PLANNING_SYSTEM instance the watch tests follow (``fields`` added or replaced)."""
    return Service.objects.create(**{"name": "planner-1", "type": "PLANNING_SYSTEM", "url": "http://127.0.0.1:8911",
                                     "status": HealthStatus.PASSING, **fields})


def make_read_key() -> tuple[ApiKey, str]:
    """A ``registry:read`` key and its token."""
    return api_key_create(name="watcher", scopes=["registry:read"])


async def asgi_get(app, path: str, query: str = "", *, headers: list[tuple[bytes, bytes]],
                   on_start: Callable[[], None] | None = None) -> list[dict]:
    """GET ``path?query`` with ``headers`` (plus ``host``); returns the ASGI messages the app sent.

    The client never disconnects while the app answers. ``on_start`` runs when the response starts
    (tests that check the order in which requests were answered)."""
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": query.encode(), "scheme": "http", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 5000), "http_version": "1.1",
             "headers": [(b"host", b"127.0.0.1"), *headers]}
    received = [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict] = []

    async def receive():
        if received:
            return received.pop()
        await asyncio.sleep(60)  # no disconnect
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start" and on_start is not None:
            on_start()
        sent.append(message)

    await app(scope, receive, send)
    return sent
