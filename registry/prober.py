"""The health sweep's HTTP prober: aiohttp GETs on one asyncio event loop per process.

Why aiohttp, not ``requests`` (which the ServiceClient uses): a health probe is one
GET whose status and small JSON body are all the sweep reads, and the sweep sends
thousands of them, hundreds hanging at a time. Client CPU per GET measured by
bench/probe_clients.py: aiohttp ≈ 117 µs, urllib3 ≈ 404 µs, requests ≈ 991 µs; an
event loop also keeps hundreds of hanging probes in flight without a thread each.
The sweep is bound by its database writes, not the client. (This module used to be
a hand-written HTTP/1.1 client; its redirect and credential handling were defects,
and ~400 lines of HTTP parsing are better owned by a well-kept library.)

Why ONE loop thread per process: aiohttp sessions and connection pools belong to
one loop; a single loop shares the keep-alive pool and the per-destination limits
across every sweep the process runs (the beat sweep, helper shares, "check now"),
which a loop per sweep or per thread could not; and the sweep's own thread stays
free to claim and write while probes are out. The thread is re-created after a fork
(threads do not survive one).

Under the egress policy (``registry.egress``):

- the URL's host is vetted (resolved through the policy's seam when it is a name)
  and the GET goes to the vetted address, with the original name as ``Host`` and as
  the TLS server name: no second lookup a rebinding DNS server could answer;
- the connector's resolver is the policy too (a defence in depth: only addresses
  reach it, and a name that slipped through would be vetted again);
- redirects are never followed (a 3xx is the probe's answer), credentials in a URL
  are refused, no proxies, no cookies;
- the service's timeout bounds the WHOLE probe (aiohttp's total timeout): a
  dripping server cannot hold a probe past it; bodies are read up to ``max_body``
  bytes after decompression, then the connection is dropped.

Limits: per destination (address and port) at most
``HEALTH_PROBE_PER_DESTINATION_CONCURRENCY`` probes at once and
``HEALTH_PROBE_PER_DESTINATION_RATE`` started per second; probes waiting for their
destination hold no global slot, so a slow or black-holed destination only delays
itself (fair across destinations), and beyond ``HEALTH_PROBE_PER_DESTINATION_QUEUE``
waiting probes a destination's further probes are deferred to a later sweep
rather than queued. Globally, at most ``max_in_flight`` probes at once and at most
``concurrency`` of them younger than ``slow_after`` seconds (hanging probes stop
counting against ``concurrency`` so they do not hold back the fast ones).

(About 410 lines, just over the ~400 the project aims for: the event loop's thread, the
per-destination limiter and the probe itself share the loop's state; the HTTP work is
aiohttp's, the vetting the egress policy's.)
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings

from registry import egress

USER_AGENT = "berrys-portal-health/2"
IDLE_SECONDS = 30.0  # keep-alive sockets idle longer than this are closed


class ProbeTimeout(Exception):
    category = "timed out"


class ProbeConnectionError(Exception):
    """Could not connect, or the peer closed / reset the connection."""

    category = "connection failed"

    def __init__(self, message: str, *, category: str | None = None) -> None:
        super().__init__(message)
        if category:
            self.category = category


class ProbeProtocolError(Exception):
    """The peer answered something that is not HTTP."""

    category = "not HTTP"


class ProbeDeferred(Exception):
    """Not sent: too many probes already wait for this destination."""

    category = "deferred"


@dataclass
class Response:
    status: int
    body: bytes
    truncated: bool = False
    location: str | None = None  # of a redirect (never followed)


class EgressResolver(AbstractResolver):
    """aiohttp's resolver under the egress policy: only vetted addresses come out."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        addresses = await loop.run_in_executor(None, egress.host_resolve, host, port)
        return [
            ResolveResult(hostname=host, host=str(a), port=port,
                          family=socket.AF_INET6 if a.version == 6 else socket.AF_INET,
                          proto=0, flags=socket.AI_NUMERICHOST)
            for a in addresses
        ]

    async def close(self) -> None:
        pass


@dataclass(frozen=True)
class Target:
    """A health URL parsed once: where to connect is decided per probe (the policy runs every time)."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, already quoted


@functools.lru_cache(maxsize=20_000)
def target_for(url: str) -> Target:
    """Parse a health URL once (ValueError / EgressDenied name what is wrong; not cached)."""
    scheme, host, port = egress.url_parts(url)  # ValueError / EgressDenied (credentials)
    parts = urlsplit(url)
    from requests.utils import requote_uri  # quotes unsafe characters as requests would

    path = requote_uri((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    return Target(scheme, host, port, path)


_NO_CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None)


def _policy_key() -> tuple:
    """The settings the policy reads: a cached verdict is only reused while they are unchanged."""
    return (tuple(settings.REGISTRY_ALLOWED_NETWORKS), settings.EGRESS_ALLOW_LOOPBACK,
            settings.EGRESS_ALLOW_SELF, settings.PORTAL_PORT)


@functools.lru_cache(maxsize=20_000)
def _literal_destination(url: str, policy: tuple) -> egress.Destination:
    """An IP-literal URL's verdict needs no DNS, so it is the same every time (per policy)."""
    target = target_for(url)
    literal = egress.literal_address(target.host)
    egress.address_check(literal, port=target.port)  # raises EgressDenied (not cached)
    return egress.Destination(target.scheme, target.host, target.port, literal)


@functools.lru_cache(maxsize=20_000)
def _pinned_url(url: str, dest: egress.Destination) -> yarl.URL:
    addr = str(dest.address)
    shown = f"[{addr}]" if ":" in addr else addr
    return yarl.URL(f"{dest.scheme}://{shown}:{dest.port}{target_for(url).path}", encoded=True)


class _DestinationLimit:
    """Concurrency and a token-bucket rate for one (address, port)."""

    __slots__ = ("sem", "rate", "tokens", "stamp", "waiting")

    def __init__(self, concurrency: int, rate: float) -> None:
        self.sem = asyncio.Semaphore(concurrency)
        self.rate = rate
        self.tokens = rate  # a full bucket: a burst of one second's worth
        self.stamp = time.monotonic()
        self.waiting = 0

    async def acquire(self) -> None:
        await self.sem.acquire()
        while True:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


class Prober:
    """An event loop on its own thread; ``submit`` hands it probes from any thread."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._limits: dict[tuple[str, int], _DestinationLimit] = {}
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
        """Close the session and stop the loop (tests; a process's prober lives as long as it)."""

        async def shut() -> None:
            if self._session is not None:
                await self._session.close()
                self._session = None

        try:
            self.run(shut(), timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)

    def run(self, coro, timeout: float | None = None):
        """Run a coroutine on the loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # --- the client ---------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # The CA bundle requests would use: REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, else certifi's.
            cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if not cafile:
                import certifi

                cafile = certifi.where()
            self._ssl = ssl.create_default_context(cafile=cafile)
        return self._ssl

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=EgressResolver(), use_dns_cache=False, ssl=self._ssl_context(),
                limit=0,  # the Gate bounds probes in flight
                limit_per_host=settings.HEALTH_PROBE_PER_DESTINATION_CONCURRENCY,
                keepalive_timeout=IDLE_SECONDS,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT, "Accept": "application/json, */*"},
                auto_decompress=True,
            )
        return self._session

    def _limit(self, key: tuple[str, int]) -> _DestinationLimit:
        limit = self._limits.get(key)
        if limit is None:
            limit = self._limits[key] = _DestinationLimit(
                settings.HEALTH_PROBE_PER_DESTINATION_CONCURRENCY, settings.HEALTH_PROBE_PER_DESTINATION_RATE,
            )
        return limit

    async def destination(self, url: str) -> egress.Destination:
        """Vet the URL's host now (names are resolved off the loop, through the policy's seam)."""
        target = target_for(url)
        literal = egress.literal_address(target.host)
        if literal is not None:
            return _literal_destination(url, _policy_key())
        addresses = await self.loop.run_in_executor(None, egress.host_resolve, target.host, target.port)
        return egress.Destination(target.scheme, target.host, target.port, addresses[0])

    async def fetch(self, url: str, dest: egress.Destination, *, max_body: int, timeout: float) -> Response:
        """GET ``url`` at the vetted ``dest`` (no redirect followed); raises Probe* errors."""
        pinned = _pinned_url(url, dest)
        kwargs: dict[str, Any] = {}
        if dest.scheme == "https":
            kwargs["server_hostname"] = dest.tls_name  # SNI, and the certificate is checked against it
        try:
            async with asyncio.timeout(timeout):  # the whole probe, whatever aiohttp's phases do
                async with self._client().get(
                    pinned, headers={"Host": dest.host_header}, allow_redirects=False,
                    timeout=_NO_CLIENT_TIMEOUT, **kwargs,  # asyncio.timeout above bounds it all
                ) as resp:
                    if 300 <= resp.status < 400:
                        return Response(resp.status, b"", location=resp.headers.get("Location", ""))
                    chunks, size, truncated = [], 0, False
                    while True:
                        chunk = await resp.content.read(65536)
                        if not chunk:
                            break
                        size += len(chunk)
                        if size > max_body:
                            chunks.append(chunk[: max_body - (size - len(chunk))])
                            truncated = True
                            resp.close()  # drop the connection rather than read the rest
                            break
                        chunks.append(chunk)
                    return Response(resp.status, b"".join(chunks), truncated=truncated)
        except TimeoutError as exc:
            raise ProbeTimeout(f"{timeout:g}") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ProbeConnectionError(f"TLS error: {exc}", category="TLS error") from exc
        except aiohttp.ClientConnectorSSLError as exc:
            raise ProbeConnectionError(f"TLS error: {exc}", category="TLS error") from exc
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            raise ProbeConnectionError(
                exc.strerror or str(exc), category="connection refused" if refused else "connection failed",
            ) from exc
        except aiohttp.ClientResponseError as exc:
            raise ProbeProtocolError(f"not an HTTP answer: {exc.message}"[:300]) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                aiohttp.ClientOSError, ConnectionError) as exc:
            raise ProbeConnectionError(f"connection closed: {exc}"[:300],
                                       category="connection closed") from exc

    async def get(self, url: str, *, max_body: int = 65536, timeout: float = 10.0) -> Response:
        """Vet, then GET (tests and tools; the sweep goes through ``submit``)."""
        dest = await self.destination(url)
        return await self.fetch(url, dest, max_body=max_body, timeout=timeout)

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
        try:
            url, timeout = url_of(job), timeout_of(job)
            dest = await self.destination(url)
        except Exception as exc:  # noqa: BLE001 - refused by the policy, bad URL: the probe's result
            done(job, None, exc, 0.0)
            return
        limit = self._limit(dest.key)
        if limit.waiting >= settings.HEALTH_PROBE_PER_DESTINATION_QUEUE:
            done(job, None, ProbeDeferred(f"{limit.waiting} probes already wait for {dest.key}"), 0.0)
            return
        limit.waiting += 1
        try:
            await limit.acquire()  # holds no global slot while it waits
        finally:
            limit.waiting -= 1
        try:
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
                response = await self.fetch(url, dest, max_body=max_body, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - reported to the caller, never raised on the loop
                error = exc
            finally:
                aging.cancel()
                release_fast()
                gate.in_flight.release()
        finally:
            limit.sem.release()
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
