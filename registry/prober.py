"""The health sweep's HTTP prober: plain HTTP/1.1 GETs on one asyncio event loop.

Why not ``requests`` here: a health probe is one GET whose status and small JSON body
are all the sweep reads, and the sweep sends thousands of them. Measured by
bench/probe_clients.py on the 2-core CI machine against keep-alive loopback servers,
client CPU per GET: requests ``Session.get`` ~1,160 µs, ``http.client`` on threads
~275 µs, this prober ~125 µs (and 7× the requests pool's GETs per second). An event loop also keeps hundreds of hanging probes in flight without
a thread each. The ServiceClient (workflow and gateway calls) keeps using requests.

What it does, and what it deliberately does not:

- one daemon thread per process runs the loop (re-created after a fork);
- keep-alive connections pooled per (scheme, host, port), with a global cap on idle
  sockets; a reused connection that the server closed meanwhile is retried once on a
  fresh one (a GET is safe to resend);
- ``Content-Length``, ``chunked`` and close-delimited bodies, interim 1xx responses,
  bodies capped at ``max_body`` bytes (a larger body is cut there and the
  connection dropped);
- https with certificate verification against the bundle requests would use
  (``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``, else certifi's);
- up to ``MAX_REDIRECTS`` redirects followed, as requests does for a GET;
- the service's timeout bounds the WHOLE probe (connect, send, headers, body),
  stricter than requests' per-read timeout: a server that drips bytes cannot
  hold a probe past its timeout;
- no proxies (health URLs are on the services' own network) and no cookies.

Bounds: at most ``max_in_flight`` probes at once, and at most ``concurrency`` of them
younger than ``slow_after`` seconds: a probe that is still running after
``slow_after`` stops counting against ``concurrency``, so hanging services do not
hold back the fast ones, while fast probes do not open hundreds of sockets at once.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

MAX_REDIRECTS = 5
MAX_HEADER_LINES = 100
IDLE_SECONDS = 30.0  # idle keep-alive sockets older than this are dropped, not reused
USER_AGENT = b"berrys-portal-health/1"


class ProbeTimeout(Exception):
    pass


class ProbeConnectionError(Exception):
    """Could not connect, or the peer closed / reset the connection."""


class ProbeProtocolError(Exception):
    """The peer answered something that is not HTTP/1.x."""


@dataclass
class Response:
    status: int
    body: bytes
    truncated: bool = False
    location: str | None = None  # of a redirect


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # for connecting (no brackets around IPv6)
    port: int
    request_line: bytes
    host_header: bytes
    auth: bytes  # an Authorization header line, or b""

    @property
    def key(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


@functools.lru_cache(maxsize=20_000)
def target_for(url: str) -> Target:
    """Parse a health URL once (ValueError names what is wrong)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported scheme {parts.scheme!r}")
    host = parts.hostname
    if not host:
        raise ValueError("no host in URL")
    port = parts.port or (443 if scheme == "https" else 80)
    default_port = port == (443 if scheme == "https" else 80)
    try:
        host_ascii = host.encode("idna").decode("ascii") if ":" not in host else host
    except UnicodeError as exc:
        raise ValueError(f"bad host name {host!r}") from exc
    shown = f"[{host_ascii}]" if ":" in host_ascii else host_ascii
    host_header = shown if default_port else f"{shown}:{port}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    # requests re-quotes unsafe characters the same way: spaces and non-ASCII become %XX.
    from requests.utils import requote_uri

    path = requote_uri(path)
    auth = b""
    if parts.username is not None:
        raw = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = b"Authorization: Basic " + base64.b64encode(raw) + b"\r\n"
    request_line = f"GET {path} HTTP/1.1\r\n".encode("ascii")
    return Target(scheme, host_ascii, port, request_line, host_header.encode("ascii"), auth)


class _Conn:
    __slots__ = ("reader", "writer", "used_at")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.used_at = reader, writer, time.monotonic()

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - closing a dead socket
            pass


class Prober:
    """An event loop on its own thread; ``submit`` hands it probes from any thread."""

    def __init__(self, *, max_idle: int = 256) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._idle: OrderedDict[tuple, list[_Conn]] = OrderedDict()
        self._idle_count = 0
        self._max_idle = max_idle
        self._ssl: ssl.SSLContext | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="health-prober", daemon=True)
        self.thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def close(self) -> None:
        """Stop the loop and drop idle sockets (tests; a process's prober lives as long as it)."""

        def stop() -> None:
            for conns in self._idle.values():
                for conn in conns:
                    conn.close()
            self._idle.clear()
            self._idle_count = 0
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(5)

    def run(self, coro, timeout: float | None = None):
        """Run a coroutine on the loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # --- connections ---------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # The CA bundle requests would use: REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, else certifi's.
            cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if not cafile:
                import certifi

                cafile = certifi.where()
            self._ssl = ssl.create_default_context(cafile=cafile)
        return self._ssl

    def _checkout(self, key: tuple) -> _Conn | None:
        conns = self._idle.get(key)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            self._idle_count -= 1
            if now - conn.used_at < IDLE_SECONDS and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    def _checkin(self, key: tuple, conn: _Conn) -> None:
        conn.used_at = time.monotonic()
        self._idle.setdefault(key, []).append(conn)
        self._idle.move_to_end(key)
        self._idle_count += 1
        while self._idle_count > self._max_idle:
            oldest_key, oldest = next(iter(self._idle.items()))
            if oldest:
                oldest.pop(0).close()
                self._idle_count -= 1
            if not oldest:
                del self._idle[oldest_key]

    async def _connect(self, target: Target) -> _Conn:
        try:
            if target.scheme == "https":
                reader, writer = await asyncio.open_connection(
                    target.host, target.port, ssl=self._ssl_context(), server_hostname=target.host,
                )
            else:
                reader, writer = await asyncio.open_connection(target.host, target.port)
        except ssl.SSLError as exc:
            raise ProbeConnectionError(f"TLS error: {exc.reason or exc}") from exc
        except OSError as exc:
            raise ProbeConnectionError(exc.strerror or type(exc).__name__) from exc
        return _Conn(reader, writer)

    # --- one exchange ------------------------------------------------------------------------

    async def _exchange(self, conn: _Conn, target: Target, max_body: int) -> tuple[Response, bool]:
        """Send the GET, read the response; returns it and whether the socket can be reused."""
        conn.writer.write(
            target.request_line + b"Host: " + target.host_header + b"\r\nUser-Agent: " + USER_AGENT
            + b"\r\nAccept: application/json, */*\r\nConnection: keep-alive\r\n" + target.auth + b"\r\n"
        )
        reader = conn.reader
        while True:
            line = await reader.readuntil(b"\r\n")
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise ProbeProtocolError(f"not an HTTP/1.x status line: {line[:60]!r}")
            version, status = parts[0], int(parts[1])
            headers: dict[bytes, bytes] = {}
            for _ in range(MAX_HEADER_LINES + 1):
                hline = await reader.readuntil(b"\r\n")
                if hline == b"\r\n":
                    break
                name, _, value = hline.partition(b":")
                headers[name.strip().lower()] = value.strip()
            else:
                raise ProbeProtocolError("too many header lines")
            if 100 <= status < 200 and status != 101:
                continue  # interim response; the real one follows
            break
        keep = version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
        if status in (301, 302, 303, 307, 308) and b"location" in headers:
            # The redirect's own body is not needed: drop the socket rather than read it.
            return Response(status, b"", location=headers[b"location"].decode("latin-1")), False
        if status in (204, 304) or 100 <= status < 200:
            return Response(status, b""), keep
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body, complete = await self._read_chunked(reader, max_body)
            return Response(status, body, truncated=not complete), keep and complete
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError as exc:
                raise ProbeProtocolError(f"bad Content-Length {length[:20]!r}") from exc
            if n > max_body:
                return Response(status, await reader.readexactly(max_body), truncated=True), False
            return Response(status, await reader.readexactly(n)), keep
        # Delimited by the connection closing.
        body = await reader.read(max_body + 1)
        chunks = [body]
        size = len(body)
        while body and size <= max_body:
            body = await reader.read(max_body + 1 - size)
            chunks.append(body)
            size += len(body)
        data = b"".join(chunks)
        return Response(status, data[:max_body], truncated=size > max_body), False

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader, max_body: int) -> tuple[bytes, bool]:
        chunks, size = [], 0
        while True:
            head = await reader.readuntil(b"\r\n")
            try:
                n = int(head.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise ProbeProtocolError(f"bad chunk size {head[:20]!r}") from exc
            if n == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(chunks), True
            if size + n > max_body:
                chunks.append(await reader.readexactly(max_body - size))
                return b"".join(chunks), False
            chunks.append(await reader.readexactly(n))
            size += n
            await reader.readexactly(2)

    async def get(self, url: str, *, max_body: int = 65536) -> Response:
        """GET a URL (following redirects); raises Probe* errors or ValueError for a bad URL."""
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._get_once(target_for(url), max_body)
            if not response.location:
                return response
            url = urljoin(url, response.location)
        raise ProbeProtocolError(f"more than {MAX_REDIRECTS} redirects")

    async def _get_once(self, target: Target, max_body: int) -> Response:
        for attempt in (0, 1):
            conn = self._checkout(target.key) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(target)
            try:
                response, keep = await self._exchange(conn, target, max_body)
            except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as exc:
                conn.close()
                started = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
                if reused and not started:
                    continue  # the server closed an idle keep-alive socket: resend on a fresh one
                raise ProbeConnectionError(
                    "connection closed by the server" if isinstance(exc, asyncio.IncompleteReadError)
                    else type(exc).__name__
                ) from exc
            except asyncio.LimitOverrunError as exc:
                conn.close()
                raise ProbeProtocolError("response header line too long") from exc
            except BaseException:
                conn.close()  # timeout (cancellation) or protocol error: the socket state is unknown
                raise
            if keep:
                self._checkin(target.key, conn)
            else:
                conn.close()
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    # --- batches from other threads ------------------------------------------------------------

    def submit(
        self,
        jobs: Iterable[Any],
        *,
        url_of: Callable[[Any], str],
        timeout_of: Callable[[Any], float],
        done: Callable[[Any, Response | None, BaseException | None, float], None],
        gate: Gate,
        max_body: int = 65536,
    ) -> None:
        """Start one probe per job; ``done(job, response, error, latency_s)`` runs on the loop thread."""
        jobs = list(jobs)
        self.loop.call_soon_threadsafe(self._start, jobs, url_of, timeout_of, done, gate, max_body)

    def _start(self, jobs, url_of, timeout_of, done, gate: Gate, max_body: int) -> None:
        for job in jobs:
            self.loop.create_task(self._one(job, url_of, timeout_of, done, gate, max_body))

    async def _one(self, job, url_of, timeout_of, done, gate: Gate, max_body: int) -> None:
        await gate.enter()
        released = False

        def release_fast() -> None:
            nonlocal released
            if not released:
                released = True
                gate.fast.release()

        aging = self.loop.call_later(gate.slow_after, release_fast)
        started = time.perf_counter()
        response = error = None
        try:
            timeout = timeout_of(job)
            try:
                async with asyncio.timeout(timeout):
                    response = await self.get(url_of(job), max_body=max_body)
            except TimeoutError:
                error = ProbeTimeout(f"{timeout:g}")
        except Exception as exc:  # noqa: BLE001 - reported to the caller, never raised on the loop
            error = exc
        finally:
            aging.cancel()
            release_fast()
            gate.in_flight.release()
        done(job, response, error, time.perf_counter() - started)


class Gate:
    """The probe limits of one sweep (made on the caller's thread, used on the loop's:
    asyncio semaphores bind to a loop on first use)."""

    def __init__(self, *, max_in_flight: int, concurrency: int, slow_after: float) -> None:
        self.slow_after = slow_after
        self.in_flight = asyncio.Semaphore(max_in_flight)
        self.fast = asyncio.Semaphore(concurrency)

    async def enter(self) -> None:
        await self.in_flight.acquire()
        await self.fast.acquire()


_prober: Prober | None = None
_prober_lock = threading.Lock()


def prober() -> Prober:
    """This process's prober (a forked child gets its own: threads do not survive a fork)."""
    global _prober
    with _prober_lock:
        if _prober is None or _prober.pid != os.getpid() or not _prober.thread.is_alive():
            _prober = Prober()
        return _prober
