"""The machinery every simulated Berrys service shares.

A ``SimulatedService`` is a real HTTP server (stdlib ``ThreadingHTTPServer`` in
a thread) with a tiny router, an in-memory store, the guide's ``/health``
endpoint, fault knobs settable at run time through ``/_control``, and a
``PortalRegistration`` that registers it with the portal, heartbeats and
deregisters on shutdown through the client package (``berrys_client``). No Django here: the simulators are separate
processes that talk to the portal over HTTP, like the real services would.

(About 480 lines, over the ~400 the project aims for: the HTTP server, its router, the fault
knobs and the registration form one object every simulator subclasses; split apart, each
simulator would have to assemble them itself. Not portal code: a test and demo fixture.)
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from berrys_client import ServiceResponseError
from berrys_client.sync import SyncServiceRegistration

logger = logging.getLogger("simulators")

# A hung request gives up after this long even if nobody clears the knob, so a
# forgotten "hang" never pins a thread forever.
HANG_MAX_SECONDS = 300.0


class HttpError(Exception):
    """Raised by a handler to answer with an error status and a JSON body."""

    def __init__(self, status: int, detail: str, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.body = {"detail": detail, **extra}


@dataclass
class Faults:
    """Fault knobs. ``down``: False, True/"503" (answer 503) or "refuse" (close the port)."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    down: bool | str = False
    hang: bool = False

    def validate(self) -> None:
        if not isinstance(self.latency_ms, int | float) or self.latency_ms < 0:
            raise HttpError(400, "latency_ms must be a number >= 0")
        if not isinstance(self.error_rate, int | float) or not 0 <= self.error_rate <= 1:
            raise HttpError(400, "error_rate must be a number between 0 and 1")
        if self.down not in (False, True, "503", "refuse"):
            raise HttpError(400, 'down must be false, true, "503" or "refuse"')
        if not isinstance(self.hang, bool):
            raise HttpError(400, "hang must be true or false")


Handler = Callable[["Request"], tuple[int, Any]]


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, list[str]]
    body: Any
    match: dict[str, str] = field(default_factory=dict)

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.params.get(name)
        return values[-1] if values else default


def _start_tag() -> str:
    """Base-36 tenths of a second since 2024, plus 2 random digits: short, and different
    for every start of a service (two starts in the same tenth still differ by chance)."""
    n = int((time.time() - 1_704_067_200) * 10) * 1296 + random.randrange(1296)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


class SimulatedService:
    """One Berrys service on its own port. Subclasses add routes in ``setup_routes``."""

    service_type: str = ""
    slug: str = ""
    version: str = "1.0.0"
    capabilities: tuple[str, ...] = ()
    # A careful service: a repeated Idempotency-Key gets the first answer, not a second effect.
    honours_idempotency_key: bool = True
    IDEMPOTENCY_HEADER = "Idempotency-Key"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.requested_port = port
        self.faults = Faults()
        self.lock = threading.RLock()
        self.store: dict[str, dict[str, Any]] = {}
        self.counters: dict[str, int] = {}
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._hang_released = threading.Event()
        self._next_id = 0
        self._start_tag = _start_tag()
        # (method, route, key) -> the first answer; one lock per key makes a repeat that
        # arrives while the first is still being handled wait for, then return, its answer.
        self._answers: dict[tuple[str, str, str], tuple[int, Any]] = {}
        self._key_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self.key_effects: dict[tuple[str, str, str], int] = {}
        self.port = port
        self.setup_routes()

    # --- routing -----------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "/?$")
        self.routes.append((method, regex, handler))

    def setup_routes(self) -> None:  # pragma: no cover - overridden
        pass

    def endpoints(self) -> list[dict[str, str]]:
        out = []
        for method, regex, _ in self.routes:
            path = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", regex.pattern[1:-3])
            out.append({"method": method, "path": path})
        return out

    def new_id(self, prefix: str) -> str:
        """``proj-<start tag>-<n>``: unique across restarts, so a second demo's ids (and the
        idempotency keys the portal derives from them) never meet an earlier demo's."""
        with self.lock:
            self._next_id += 1
            return f"{prefix}-{self._start_tag}-{self._next_id}"

    # --- lifecycle ---------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if self.faults.hang:
            self._hang_released.clear()
        server = _Server((self.host, self.port or self.requested_port), _make_handler(self))
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"sim-{self.slug}", daemon=True,
        )
        self._thread.start()
        logger.info("%s listening on %s", self.slug, self.url)

    def stop(self) -> None:
        self._hang_released.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.drop_connections()

    @property
    def listening(self) -> bool:
        return self._server is not None

    # --- faults ------------------------------------------------------------------
    def set_faults(self, changes: dict[str, Any]) -> Faults:
        if not isinstance(changes, dict):
            raise HttpError(400, "Body must be a JSON object")
        unknown = sorted(set(changes) - set(Faults.__dataclass_fields__) - {"reset"})
        if unknown:
            raise HttpError(400, f"Unknown knob(s): {', '.join(unknown)}")
        with self.lock:
            base = Faults() if changes.get("reset") else self.faults
            merged = Faults(**{**asdict(base), **{k: v for k, v in changes.items() if k != "reset"}})
            merged.validate()
            was_refusing = self.faults.down == "refuse"
            self.faults = merged
            if merged.hang:
                self._hang_released.clear()
            else:
                self._hang_released.set()
        # Refusing connections means really closing the port; reopening binds it again.
        # (Safe from a request thread: ThreadingHTTPServer serves in other threads.)
        if merged.down == "refuse" and self.listening:
            self.stop()
        elif was_refusing and merged.down != "refuse" and not self.listening:
            self.start()
        return merged

    def apply_faults(self, *, is_health: bool) -> tuple[int, Any] | None:
        """Delay, hang or fail the current request as the knobs say; None means serve it."""
        faults = self.faults
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.hang:
            self._hang_released.wait(HANG_MAX_SECONDS)
        if faults.down:
            return 503, {"status": "unhealthy", "detail": f"{self.slug} is down (simulated)"}
        # The error rate hits the API, not /health: a flaky service still looks alive
        # to the sweep, which is exactly what makes breakers necessary.
        if not is_health and faults.error_rate and random.random() < faults.error_rate:
            return 500, {"detail": "Internal Server Error (simulated fault)"}
        return None

    # --- built-in endpoints --------------------------------------------------------
    def health(self) -> tuple[int, Any]:
        return 200, {
            "status": "healthy",
            "database": True,
            "cache": True,
            "dependencies": True,
            "timestamp": datetime.now(UTC).isoformat(),
        }

    def control(self, method: str, body: Any) -> tuple[int, Any]:
        if method == "POST":
            self.set_faults(body if body is not None else {})
        return 200, {"service": self.slug, "faults": asdict(self.faults), "counters": dict(self.counters),
                     "duplicate_effects": self.duplicate_effects()}

    def state(self) -> tuple[int, Any]:
        with self.lock:
            return 200, json.loads(json.dumps(self.store, default=str))

    def dispatch(self, method: str, raw_path: str, body: Any, headers: Any = None) -> tuple[int, Any]:
        key = headers.get(self.IDEMPOTENCY_HEADER) if headers is not None else None
        path = urlsplit(raw_path).path
        if not key or method == "GET" or path.rstrip("/") in ("/_control", "/_state", "/health"):
            return self._dispatch(method, raw_path, body)
        scope = (method, self._route_name(method, path), key)
        if not self.honours_idempotency_key:
            status, payload = self._dispatch(method, raw_path, body)
            self._count_effect(scope, status)
            return status, payload
        with self.lock:
            key_lock = self._key_locks.setdefault(scope, threading.Lock())
        with key_lock:
            with self.lock:
                answer = self._answers.get(scope)
                if answer is not None:
                    self.counters["idempotent replays"] = self.counters.get("idempotent replays", 0) + 1
            if answer is not None:
                return answer[0], copy.deepcopy(answer[1])
            status, payload = self._dispatch(method, raw_path, body)
            self._count_effect(scope, status)
            # A 5xx did nothing the caller can rely on: its retry (same key) must run again.
            if status < 500:
                with self.lock:
                    self._answers[scope] = (status, copy.deepcopy(payload))
            return status, payload

    def _count_effect(self, scope: tuple[str, str, str], status: int) -> None:
        """Successful executions per key: more than one is a duplicate effect (benches and tests read it)."""
        if 200 <= status < 300:
            with self.lock:
                self.key_effects[scope] = self.key_effects.get(scope, 0) + 1

    def duplicate_effects(self) -> int:
        with self.lock:
            return sum(n - 1 for n in self.key_effects.values() if n > 1)

    def _dispatch(self, method: str, raw_path: str, body: Any) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        path = parts.path
        if path.rstrip("/") == "/_control":
            return self.control(method, body)
        if path.rstrip("/") == "/_state" and method == "GET":
            return self.state()
        is_health = path.rstrip("/") == "/health"
        with self.lock:
            key = f"{method} {path if is_health else self._route_name(method, path)}"
            self.counters[key] = self.counters.get(key, 0) + 1
        fault = self.apply_faults(is_health=is_health)
        if fault is not None:
            return fault
        if is_health:
            return self.health()
        request = Request(method=method, path=path, params=parse_qs(parts.query), body=body)
        path_found = False
        for route_method, regex, handler in self.routes:
            found = regex.match(path)
            if not found:
                continue
            path_found = True
            if route_method == method:
                request.match = found.groupdict()
                return handler(request)
        if path_found:
            raise HttpError(405, f"Method {method} not allowed on {path}")
        raise HttpError(404, f"No route for {method} {path}")

    def _route_name(self, method: str, path: str) -> str:
        for route_method, regex, _ in self.routes:
            if route_method == method and regex.match(path):
                return re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", regex.pattern[1:-3])
        return path


class _Server(ThreadingHTTPServer):
    """Tracks open connections so that "down: refuse" also drops kept-alive ones.

    Closing only the listening socket would leave callers' pooled keep-alive
    connections served, which is not what a dead service looks like.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args: Any, **kwargs: Any):
        self.connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    """Answer with ``payload`` as JSON (``None``: an empty body), with its Content-Length."""
    data = json.dumps(payload).encode() if payload is not None else b""
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the caller gave up (timeout); nothing to tell it


def _make_handler(service: SimulatedService) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"berrys-{service.slug}/{service.version}"
        # Headers and body go out in two writes; with Nagle on, a keep-alive client's
        # delayed ACK would add ~40 ms to every response.
        disable_nagle_algorithm = True

        def log_message(self, fmt: str, *args: Any) -> None:
            logger.debug("%s %s", service.slug, fmt % args)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._send(400, {"detail": "Body is not valid JSON"})
                return
            try:
                status, payload = service.dispatch(self.command, self.path, body, self.headers)
            except HttpError as exc:
                status, payload = exc.status, exc.body
            except Exception as exc:  # noqa: BLE001 - a simulator bug answers 500, like a real service
                logger.exception("%s: unhandled error", service.slug)
                status, payload = 500, {"detail": f"Internal Server Error: {exc}"}
            self._send(status, payload)

        def _send(self, status: int, payload: Any) -> None:
            send_json(self, status, payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return _Handler


class PortalRegistration:
    """Registers one service with the portal through the client package, heartbeats, and
    deregisters on stop.

    The client package (``clients/python``, ``berrys_client``) does the work, as it would
    for a real Berrys service, so the demo proves it: ``start(retry=True)`` waits for a
    portal that starts after the simulators (``make demo`` starts everything at once) with
    capped exponential backoff and jitter; the heartbeat registers again when the portal
    answers 404 (deregistered by an operator or the sweep). Here a thread per service waits
    for that first registration, so the READY line is printed before the portal is up.
    A portal that refuses the optional fields (400) gets the guide's bare payload instead.
    """

    def __init__(
        self, service: SimulatedService, *, portal_url: str, api_key: str,
        heartbeat_seconds: float = 10.0, max_backoff: float = 5.0,
    ):
        self.service = service
        self.portal_url = portal_url.rstrip("/")
        self.max_backoff = max_backoff
        self.registered = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = SyncServiceRegistration(
            self.portal_url, api_key, heartbeat_interval=heartbeat_seconds, timeout=5, **self.payload(),
        )

    @property
    def service_id(self) -> int | None:
        return self.client.service_id

    def payload(self, *, minimal: bool = False) -> dict[str, Any]:
        svc = self.service
        data: dict[str, Any] = {
            "name": svc.slug,
            "type": svc.service_type,
            "url": svc.url,
            "health_url": f"{svc.url}/health",
            "metadata": {"version": svc.version},
        }
        if not minimal:
            data["capabilities"] = list(svc.capabilities)
            data["endpoints"] = svc.endpoints()
        return data

    def _register(self) -> None:
        while not self._stop.is_set():
            try:
                self.client.start(retry=True, max_backoff=self.max_backoff)
            except (CancelledError, asyncio.CancelledError):
                return  # stop() ended the wait
            except ServiceResponseError as exc:
                if exc.status == 400 and "capabilities" in self.client.inner.payload:
                    # An older portal may not know the optional fields: fall back to the guide's.
                    logger.warning("%s: portal refused the full payload (%s); retrying with the guide's",
                                   self.service.slug, str(exc.body)[:300])
                    self.client.inner.payload = self.payload(minimal=True)
                    continue
                logger.warning("%s: registration answered HTTP %s: %s",
                               self.service.slug, exc.status, str(exc.body)[:300])
                self._stop.wait(self.max_backoff)
                continue
            if self._stop.is_set():  # stop() came while the portal answered: leave no row behind
                self.client.stop()
                return
            self.registered.set()
            logger.info("%s registered with the portal as id %s", self.service.slug, self.service_id)
            return

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._register, name=f"register-{self.service.slug}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        was = self.service_id
        self.client.stop()  # ends a registration still waiting, the heartbeats, and deregisters
        if self._thread is not None:
            self._thread.join(timeout=6)
        if was is not None and self.service_id is None:
            logger.info("%s deregistered", self.service.slug)
        self.registered.clear()
