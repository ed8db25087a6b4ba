"""Real HTTP servers on 127.0.0.1 for the health, breaker, client and alert tests.

A ``Loopback`` server answers each path with a scripted behaviour (healthy,
slow, hanging, an error status, an unhealthy body, flapping) and records every
request it receives, so tests assert on what really went over the wire.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list → JSON; str → text; None → empty
    delay: float = 0.0
    hang: bool = False  # hold the connection until the server stops


@dataclass
class Hit:
    method: str
    path: str
    body: Any
    at: float
    headers: dict[str, str] = field(default_factory=dict)


Behaviour = Reply | Callable[[int], Reply]  # a callable gets the hit number (1-based) for that path


@dataclass
class Loopback:
    routes: dict[str, Behaviour] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: no ~40 ms stall

            def log_message(self, *args):  # keep test output quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                path = self.path.split("?")[0]
                with owner._lock:
                    owner.hits.append(Hit(self.command, path, body, time.monotonic(), dict(self.headers)))
                    n = sum(1 for h in owner.hits if h.path == path)
                behaviour = owner.routes.get(path, Reply(404, {"detail": "no route"}))
                reply = behaviour(n) if callable(behaviour) else behaviour
                if reply.hang:
                    owner._release.wait(60)
                    return
                if reply.delay:
                    owner._release.wait(reply.delay)
                if isinstance(reply.body, dict | list):
                    payload, ctype = json.dumps(reply.body).encode(), "application/json"
                elif isinstance(reply.body, str):
                    payload, ctype = reply.body.encode(), "text/plain"
                else:
                    payload, ctype = b"", "text/plain"
                self.send_response(reply.status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for h in self.hits if h.path == path)

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


def flapping(*replies: Reply) -> Callable[[int], Reply]:
    """Cycle through replies: hit 1 gets the first, hit 2 the second, …"""
    return lambda n: replies[(n - 1) % len(replies)]


def sequence(*replies: Reply) -> Callable[[int], Reply]:
    """Replies in order, the last one repeated."""
    return lambda n: replies[min(n, len(replies)) - 1]
