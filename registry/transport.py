"""The ServiceClient's and the alert webhooks' HTTP transport: requests under the egress policy.

``egress_session()`` is a ``requests.Session`` whose adapter

* vets the URL's host with ``registry.egress`` on every request and connects to the
  vetted address (no second lookup between check and connect), sending the original
  name as ``Host`` and as the TLS server name (SNI, and the certificate is checked
  against the name);
* never uses credentials from a URL, nor proxies or ``~/.netrc`` from the environment.

``call_send`` sends one request with ``allow_redirects=False`` (a 3xx is the answer),
streams the body and stops at a cap counted AFTER decompression (urllib3 ≥ 2.6
decompresses incrementally, so a gzip bomb is cut at the cap, not expanded first),
and bounds the WHOLE call by a deadline: a watchdog thread shuts the socket down
when it passes, so an upstream dripping one byte per second (which a per-read
timeout never catches) is cut at the deadline too.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter, _urllib3_request_context
from urllib3 import exceptions as urllib3_errors
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from berrys_portal.json_input import json_loads_bounded
from registry import egress


class ResponseTooLarge(Exception):
    category = "answer too large"


class DeadlineExceeded(Exception):
    category = "timed out"


# --- the deadline watchdog ----------------------------------------------------------------------


@dataclass
class _Call:
    deadline: float
    conn: Any = None
    done: bool = False
    fired: bool = False


class _Watchdog:
    """One thread per process; shuts down the socket of a call whose deadline passed."""

    GRAIN = 0.05  # a deadline may be overshot by this much

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Call]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="egress-deadlines", daemon=True)
        self._thread.start()

    def watch(self, call: _Call) -> None:
        with self._cond:
            heapq.heappush(self._heap, (call.deadline, next(self._seq), call))
            if self._heap[0][2] is call:
                # The earliest deadline now (nothing else watched, or a shorter timeout than
                # every call in flight): wake the thread so it waits for this one instead.
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                if not self._heap:
                    self._cond.wait()
                    continue
                if self._heap[0][0] > now:
                    # Wake at most every GRAIN seconds: calls that end on time (nearly all)
                    # are dropped in batches, not with a thread wake-up each.
                    self._cond.wait(max(self._heap[0][0] - now, self.GRAIN))
                    continue
                due = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            for call in due:
                if call.done:
                    continue
                call.fired = True
                sock = getattr(call.conn, "sock", None)
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


_watchdog: _Watchdog | None = None
_watchdog_lock = threading.Lock()


def _watchdog_get() -> _Watchdog:
    global _watchdog
    with _watchdog_lock:
        if _watchdog is None or _watchdog._pid != os.getpid():
            _watchdog = _Watchdog()  # threads do not survive a fork
        return _watchdog


_local = threading.local()


class _Pool(HTTPConnectionPool):
    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        call = getattr(_local, "call", None)
        if call is not None:
            call.conn = conn  # what the watchdog shuts down
        return conn


class _HTTPSPool(HTTPSConnectionPool):
    _get_conn = _Pool._get_conn


# --- the adapter ------------------------------------------------------------------------------------


class EgressAdapter(HTTPAdapter):
    """Vets and pins the address of every request (see the module docstring)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _HTTPSPool}

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        # Refuse before anything is sent: a URL's user:pass@ is never turned into a header.
        egress.url_parts(request.url)
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies={})

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        dest = egress.destination_for(request.url)
        host_params, pool_kwargs = _urllib3_request_context(request, verify, cert, self.poolmanager)
        host_params["host"] = str(dest.address)
        host_params["port"] = dest.port
        request.headers["Host"] = dest.host_header
        if dest.scheme == "https":
            pool_kwargs["server_hostname"] = dest.tls_name
            pool_kwargs["assert_hostname"] = dest.tls_name
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)


class _NoRedirectSession(requests.Session):
    def get_redirect_target(self, resp):
        # Never a redirect: with allow_redirects=False requests would still prepare the next
        # request and, to do so, read the whole 3xx body (however large). A 3xx is the answer.
        return None


def egress_session() -> requests.Session:
    session = _NoRedirectSession()
    # Direct calls only: no proxy variables, no ~/.netrc (requests would read both per request).
    session.trust_env = False
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    adapter = EgressAdapter(pool_connections=32, pool_maxsize=32)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_thread_local = threading.local()


def thread_session() -> requests.Session:
    """This thread's session (requests sessions are not thread-safe)."""
    session = getattr(_thread_local, "session", None)
    if session is None or getattr(_thread_local, "pid", None) != os.getpid():
        session = _thread_local.session = egress_session()
        _thread_local.pid = os.getpid()
    return session


# --- one bounded call -----------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    content: bytes
    headers: dict[str, str] = field(default_factory=dict)
    encoding: str | None = None

    def decoded(self) -> Any:
        """JSON when it parses, else text, None when empty."""
        if not self.content:
            return None
        try:
            return json_loads_bounded(self.content)  # a hostile answer's nesting cannot crash us
        except ValueError:
            return self.content.decode(self.encoding or "utf-8", errors="replace")

    @property
    def location_host(self) -> str:
        from urllib.parse import urlsplit

        location = self.headers.get("location", "")
        return (urlsplit(location).hostname or "(same host)") if location else "(no location)"


def call_send(
    method: str, url: str, *, deadline_seconds: float, max_body: int, json_body: Any = None,
    params: dict | None = None, headers: dict | None = None, connect_timeout: float = 3.0,
) -> Answer:
    """One request under the egress policy, bounded in time and size (see the module docstring).

    Raises ``egress.EgressDenied``/``EgressLookupError``, ``DeadlineExceeded``,
    ``ResponseTooLarge`` or a ``requests.RequestException``.
    """
    started = time.monotonic()
    call = _Call(deadline=started + deadline_seconds)
    _local.call = call
    _watchdog_get().watch(call)
    response = None
    try:
        try:
            response = thread_session().request(
                method, url, json=json_body, params=params, headers=headers, stream=True,
                allow_redirects=False,
                timeout=(min(connect_timeout, deadline_seconds), deadline_seconds),
            )
            chunks, size = [], 0
            for chunk in response.raw.stream(65536, decode_content=True):
                size += len(chunk)
                if size > max_body:
                    raise ResponseTooLarge(
                        f"the answer is larger than {max_body} bytes (after decompression); "
                        "it was not read further")
                chunks.append(chunk)
            if call.fired:
                raise DeadlineExceeded(f"no complete answer within {deadline_seconds:g} s")
        except (requests.RequestException, OSError, urllib3_errors.HTTPError) as exc:
            if call.fired:
                raise DeadlineExceeded(f"no complete answer within {deadline_seconds:g} s") from exc
            if isinstance(exc, urllib3_errors.ReadTimeoutError):
                raise requests.Timeout(str(exc)) from exc
            if isinstance(exc, urllib3_errors.HTTPError):  # raised while streaming the body
                raise requests.ConnectionError(str(exc)) from exc
            raise
        return Answer(
            status=response.status_code, content=b"".join(chunks),
            headers={k.lower(): v for k, v in response.headers.items()}, encoding=response.encoding,
        )
    finally:
        call.done = True
        _local.call = None
        if response is not None:
            response.close()  # an unread remainder (too large, deadline): drop the connection
