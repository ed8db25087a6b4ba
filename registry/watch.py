"""Blocking watches: the registry index, and waiting until it moves past a caller's index.

The index (Consul's ``X-Consul-Index``) is kept by database triggers (migration
0008): ``RegistryIndex`` for the whole registry, ``TypeIndex`` per service type
(deletions included), ``Service.modify_index`` per row. It moves at commit, only
when a column an API reader sees changes, never on a probe that changes nothing.

Waiting: one ``IndexFeed`` per process (one thread, however many watchers) keeps
the current indexes in memory. On PostgreSQL it LISTENs on ``registry_index``
(the triggers ``pg_notify`` at commit) and re-reads the indexes at least once a
second anyway, so a notification lost with a dropped connection costs at most a
second; on SQLite (no notifications) it re-reads every ``POLL_SECONDS``. Watchers
are asyncio futures or threading events woken by the feed: an async view on the
ASGI server holds no thread while it waits. The feed wakes the futures of one event
loop with one callback in that loop (``_wake``: one cross-thread hand-over per change,
not one per watcher), counted by that loop's ``berrys_portal.answer_gate``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, connections
from django.http import JsonResponse

from berrys_portal.answer_gate import answer_gate, answer_owed
from berrys_portal.errors import PortalError

logger = logging.getLogger(__name__)

CHANNEL = "registry_index"
CHECK_SECONDS = 1.0  # version check when no notification arrives (PostgreSQL)
POLL_SECONDS = 0.2  # SQLite: no notifications, poll
DEFAULT_WAIT_SECONDS = 300.0  # Consul's default wait (5 min)
MAX_WAIT_SECONDS = 600.0  # Consul's cap (10 min)
JITTER_FRACTION = 16  # Consul adds up to wait/16 at random so watchers spread out


def index_read(*, service_type: str | None = None) -> int:
    """The registry index now (``service_type``: of the last change to that type). At least 1."""
    with connection.cursor() as cursor:
        if service_type is None:
            cursor.execute("SELECT value FROM registry_registryindex WHERE id = 1")
        else:
            cursor.execute(
                "SELECT COALESCE((SELECT value FROM registry_typeindex WHERE type = %s), 1)", [service_type]
            )
        row = cursor.fetchone()
    return max(1, int(row[0])) if row else 1


# --- Parsing ?index and ?wait as Consul does ----------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_parse(text: str) -> float:
    """A Go duration (``30s``, ``5m``, ``1m30s``, ``250ms``) in seconds; ValueError if not one."""
    text = text.strip()
    if text in ("0", ""):
        if text == "":
            raise ValueError("empty duration")
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"invalid duration {text!r}")
    return total


def index_parse(text: str) -> int:
    """Consul's ``?index``: an unsigned integer (ValueError otherwise)."""
    if not text.isdigit() or len(text) > 20:
        raise ValueError(f"invalid index {text!r}")
    value = int(text)
    if value >= 2**64:
        raise ValueError(f"invalid index {text!r}")
    return value


def wait_timeout(wait: float | None) -> float:
    """How long a blocking query waits: ``wait`` (default 5 min) capped at 10 min, plus up to 1/16 jitter."""
    base = DEFAULT_WAIT_SECONDS if not wait else min(wait, MAX_WAIT_SECONDS)
    return base + random.uniform(0, base / JITTER_FRACTION)


def watch_params(index_text: str | None, wait_text: str | None) -> tuple[int, float | None]:
    """``?index`` and ``?wait`` of a native watch; InvalidInput (400) naming a bad one."""
    from berrys_portal.errors import InvalidInput

    errors: dict[str, list[str]] = {}
    index, wait = 0, None
    if index_text is not None:
        try:
            index = index_parse(index_text)
        except ValueError:
            errors["index"] = ["An unsigned integer: the index header of your previous answer."]
    if wait_text is not None:
        try:
            wait = duration_parse(wait_text)
        except ValueError:
            errors["wait"] = ["A duration such as 30s, 5m or 1m30s (at most 10m)."]
    if errors:
        raise InvalidInput(f"Invalid query parameters: {', '.join(errors)}.", errors=errors)
    return index, wait


def watch_sync(*, index: int, wait: float | None, service_type: str | None = None) -> int:
    """Block (this thread) until the index passes ``index`` or the wait ends; the index now.

    ``index`` 0: no wait. The answer is built after this returns; the index is read first
    (an answer newer than its index only makes the next watch return at once).
    """
    if index > 0:
        feed = index_feed()
        feed.wait_sync(after=index, service_type=service_type, timeout=wait_timeout(wait))
    return index_read(service_type=service_type)


INDEX_HEADER = "X-Registry-Index"


# --- Bounds on open watches (this process) ----------------------------------------------------


class TooManyWatches(PortalError):
    """This API key has too many open watches on this server; retry later."""

    status_code = 429
    code = "too_many_watches"


class WatchServerFull(PortalError):
    """The watch server has as many open watches as it takes; retry later."""

    status_code = 503
    code = "watch_server_full"


_slots_lock = threading.Lock()
_open: Counter = Counter()


@contextmanager
def watch_slot(*, key: str) -> Iterator[None]:
    """Hold one of ``key``'s open-watch slots while waiting, or raise naming the bound that is full.

    ``key``: the caller's credential (hashed); the same API key sent as ``X-Consul-Token``
    or ``Authorization`` counts once.
    """
    with _slots_lock:
        if _open[None] >= settings.WATCH_MAX_OPEN:
            raise WatchServerFull(f"This watch server has {settings.WATCH_MAX_OPEN} open watches "
                                  "(WATCH_MAX_OPEN); retry later.")
        if _open[key] >= settings.WATCH_MAX_PER_KEY:
            raise TooManyWatches(f"This API key has {settings.WATCH_MAX_PER_KEY} open watches on this server "
                                 "(WATCH_MAX_PER_KEY); close some or retry later.")
        _open[None] += 1
        _open[key] += 1
    try:
        yield
    finally:
        with _slots_lock:
            for name in (None, key):
                _open[name] -= 1
                if not _open[name]:
                    del _open[name]


def watch_refusal(exc: PortalError) -> JsonResponse:
    """A full bound as an answer: the API's error shape, with ``Retry-After``."""
    response = JsonResponse(exc.as_dict(), status=exc.status_code)
    response["Retry-After"] = str(settings.WATCH_RETRY_AFTER_SECONDS)
    return response


def open_watches() -> int:
    """Watches holding a slot in this process."""
    return _open[None]


# --- The per-process feed -------------------------------------------------------------------


@dataclass(eq=False)  # identity-hashed: kept in a set
class _Waiter:
    wake: Callable[[], None] | None  # a sync waiter's Event.set; None for an async one
    service_type: str | None
    after: int
    loop: asyncio.AbstractEventLoop | None = None  # an async waiter's loop and future
    future: asyncio.Future | None = None


def _wake_futures(futures: list[asyncio.Future]) -> None:
    woken = 0
    for future in futures:
        if not future.done():
            future.set_result(None)
            woken += 1
    answer_gate().owe(woken)  # answers first: requests arriving meanwhile wait for these answers


def _wake(waiters: list[_Waiter]) -> None:
    """Wake ``waiters``: one hand-over per event loop, not one per waiter.

    ``call_soon_threadsafe`` writes to the loop's wake-up pipe, a system call that
    releases the GIL to the loop thread; the feed thread then waits a switch interval
    (5 ms) to get it back. Per waiter, 1,000 woken watches took 1-3 s that way (the
    convoy effect); per loop, the loop resolves all its futures in one callback.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
    for waiter in waiters:
        if waiter.loop is None:
            waiter.wake()
        else:
            by_loop.setdefault(waiter.loop, []).append(waiter.future)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_wake_futures, futures)
        except RuntimeError:  # that loop is closed: nobody is waiting on it any more
            pass


@dataclass
class _State:
    index: int = 0
    types: dict[str, int] = field(default_factory=dict)

    def of(self, service_type: str | None) -> int:
        if service_type is None:
            return max(1, self.index)
        return max(1, self.types.get(service_type, 1))


class IndexFeed:
    """The registry's indexes, kept current in memory by one thread; wakes watchers when they move."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self.state = _State()
        self._lock = threading.Lock()
        self._waiters: set[_Waiter] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loaded = threading.Event()

    # Watchers ------------------------------------------------------------------------------

    def ready(self) -> bool:
        """Started and loaded (``start()`` would return at once)."""
        return self._thread is not None and self._loaded.is_set()

    def current(self, service_type: str | None = None) -> int:
        self.start()
        return self.state.of(service_type)

    async def wait_async(self, *, after: int, service_type: str | None, timeout: float) -> int:
        """Wait (no thread held) until the index passes ``after`` or ``timeout`` ends; returns it."""
        self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = _Waiter(None, service_type, after, loop, future)
        with self._lock:
            if self.state.of(service_type) > after:
                return self.state.of(service_type)
            self._waiters.add(waiter)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(waiter)
            if future.done() and not future.cancelled():  # woken by the feed: counted by the gate
                answer_owed(loop)
        return self.state.of(service_type)

    def wait_sync(self, *, after: int, service_type: str | None, timeout: float) -> int:
        """The same for a sync view (holds its thread: use the ASGI server for many watchers)."""
        self.start()
        event = threading.Event()
        waiter = _Waiter(event.set, service_type, after)
        with self._lock:
            if self.state.of(service_type) > after:
                return self.state.of(service_type)
            self._waiters.add(waiter)
        try:
            event.wait(timeout)
        finally:
            with self._lock:
                self._waiters.discard(waiter)
        return self.state.of(service_type)

    def watcher_count(self) -> int:
        return len(self._waiters)

    # The thread ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="registry-index-feed", daemon=True)
                    self._thread.start()
        self._loaded.wait(5.0)

    def stop(self) -> None:
        """Stop the thread and release every watcher (each answers with the index it has)."""
        self._stop.set()
        with self._lock:
            waiters, self._waiters = list(self._waiters), set()
        _wake(waiters)

    def _publish(self, index: int, types: dict[str, int]) -> None:
        with self._lock:
            if index == self.state.index and types == self.state.types:
                return
            self.state = _State(index, types)
            woken = [w for w in self._waiters if self.state.of(w.service_type) > w.after]
            for waiter in woken:
                self._waiters.discard(waiter)
        _wake(woken)

    def _read(self, cursor) -> tuple[int, dict[str, int]]:
        cursor.execute("SELECT value FROM registry_registryindex WHERE id = 1")
        row = cursor.fetchone()
        index = int(row[0]) if row else 1
        # Always re-read the types (a small table): after a restore the global index may
        # come back to a value it had before, with other types behind it.
        cursor.execute("SELECT type, value FROM registry_typeindex")
        return index, {t: int(v) for t, v in cursor.fetchall()}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if connections[self.alias].vendor == "postgresql":
                    self._listen()
                else:
                    self._poll()
            except Exception:  # noqa: BLE001 - the feed must outlive a database restart
                logger.warning("registry index feed: database unavailable, retrying", exc_info=True)
                self._loaded.set()
                self._stop.wait(CHECK_SECONDS)
            finally:
                connections[self.alias].close()

    def _poll(self) -> None:
        conn = connections[self.alias]
        while not self._stop.is_set():
            with conn.cursor() as cursor:
                self._publish(*self._read(cursor))
            self._loaded.set()
            self._stop.wait(POLL_SECONDS)

    def _listen(self) -> None:
        import psycopg

        params = connections[self.alias].get_connection_params()
        params = {k: v for k, v in params.items() if k not in ("cursor_factory", "context", "prepare_threshold")}
        with psycopg.connect(**params, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            while not self._stop.is_set():
                with conn.cursor() as cursor:
                    self._publish(*self._read(cursor))
                self._loaded.set()
                # Returns at the first notification (then re-reads), or after the check interval.
                for _ in conn.notifies(timeout=CHECK_SECONDS, stop_after=1):
                    pass


_feeds: dict[str, IndexFeed] = {}
_feeds_lock = threading.Lock()


def index_feed(alias: str = "default") -> IndexFeed:
    """This process's feed (started on first use)."""
    feed = _feeds.get(alias)
    if feed is None:
        with _feeds_lock:
            feed = _feeds.setdefault(alias, IndexFeed(alias))
    return feed


def index_feed_stop(alias: str = "default", *, timeout: float = 5.0) -> None:
    """Stop this process's feed and close its connection (tests, before the database goes away)."""
    with _feeds_lock:
        feed = _feeds.pop(alias, None)
    if feed is not None:
        feed.stop()
        if feed._thread is not None:
            feed._thread.join(timeout)
