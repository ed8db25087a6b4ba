"""Circuit breakers: one per registered service, shared by every process.

Each service gets a ``ServiceBreaker`` (a ``pybreaker.CircuitBreaker``) whose
state lives in the configured store (``settings.BREAKER_STORE``): one Redis hash
per service id when ``REDIS_URL`` is set (``registry.breaker_redis``), otherwise
one database row per service (``registry.breaker_rules``, table
``registry.models_breaker``), so the embedded default's web server, workers and
beat share one breaker too.

pybreaker's public face tells the truth about the shared state:
``current_state``, ``fail_counter`` and the storage's ``opened_at`` are read from
the store on every access (its setters write there); listeners added with
``add_listener`` hear every transition this process makes and, through
pybreaker's ``state`` property, one another process made; ``call()`` (and the
``calling()`` / decorator forms) raises ``pybreaker.CircuitBreakerError`` when
the breaker is open. The portal's own callers (ServiceClient, the health sweep)
ask for a ``Permit`` before the HTTP call and report the outcome after it, as
``call()`` does; neither holds pybreaker's process-wide lock during the call (it
would serialise concurrent calls to one service). Every state change is one
atomic step in the store (a Lua script, a compare-and-set UPDATE, a short lock in
memory), so exactly one process records each transition.

Rules:
- closed: calls pass; ``fail_max`` consecutive failures open the breaker.
- open: calls fail fast until ``reset_timeout`` has passed; then ONE caller,
  across all processes, gets the half-open trial (a lease with an expiry).
- half-open: the trial's success closes the breaker, its failure re-opens it
  (``success_threshold`` is 1: the first success closes, so the half-open
  success counter is always 0 when read).
- Store unreachable: log, raise an alert, and fall back to process-local state
  (which starts closed) so the portal keeps working.

Each transition becomes a ``BreakerEvent`` row, written by the process that made
it (inside the caller's transaction if it has one; the health sweep writes its
batch in one statement), before the call returns. The outbox task derives the
breaker-trip alert from the row (``registry.outbox``): no thread of this module
holds a queued event.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pybreaker
import redis
from django.conf import settings
from django.db import Error as DjangoDbError

from registry.breaker_events import breaker_events_collect, breaker_events_write, event_record
from registry.breaker_redis import RedisBackend
from registry.breaker_rules import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerStoreContended,
    DatabaseBackend,
    MemoryBackend,
    Snapshot,
    Transition,
)
from registry.models import Criticality, Service
from registry.outbox import HEALTH_TRIP_PREFIX

__all__ = [
    "CLOSED", "HALF_OPEN", "HEALTH_TRIP_PREFIX", "OPEN", "BreakerStoreContended", "Permit", "ServiceBreaker",
    "Snapshot", "breaker_config", "breaker_events_collect", "breaker_events_write", "breaker_for",
    "breaker_forget", "breaker_snapshots",
]

logger = logging.getLogger(__name__)

# The integration guide's presets: (fail_max, reset_timeout s, call timeout s).
PRESETS: dict[str, tuple[int, float, float]] = {
    Criticality.CRITICAL: (5, 30.0, 5.0),
    Criticality.NON_CRITICAL: (3, 60.0, 10.0),
}

# How long the portal keeps using process-local state after the store failed, before
# trying it again (so an outage costs one connect timeout per period, not per call).
REDIS_RETRY_AFTER_SECONDS = 5.0
STORES = ("redis", "database", "memory")


@dataclass(frozen=True)
class BreakerConfig:
    fail_max: int
    reset_timeout: float
    call_timeout: float


def breaker_config(service: Service) -> BreakerConfig:
    """The criticality preset with the service's own overrides applied."""
    fail_max, reset_timeout, call_timeout = PRESETS.get(
        service.criticality, PRESETS[Criticality.NON_CRITICAL]
    )
    return BreakerConfig(
        fail_max=service.breaker_fail_max or fail_max,
        reset_timeout=service.breaker_reset_timeout_seconds or reset_timeout,
        call_timeout=service.breaker_call_timeout_seconds or call_timeout,
    )


class SharedBreakerStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker's storage interface over the shared store (with the outage fallback).

    Reads go to the store each time. The counters are changed only by the store's own
    atomic transitions, so pybreaker's ``increment_counter`` / ``reset_counter`` (which
    it calls from ``call()`` paths this module replaces, and when it notices a state
    change) change nothing: a reset here could wipe failures another process just counted.
    """

    def __init__(self, service_id: int) -> None:
        super().__init__(breaker_store_name())
        self.service_id = service_id
        # pybreaker's constructor reads the state once; answering "closed" there
        # saves a store round trip per breaker (the live state is read per access).
        self.ready = False

    def _snap(self) -> Snapshot:
        return _backend_call("snapshot", [self.service_id])[self.service_id]

    @property
    def state(self) -> str:
        return self._snap().state if self.ready else CLOSED

    @state.setter
    def state(self, state: str) -> None:
        _backend_call("set_state", self.service_id, state=state, now=time.time(), error="")

    @property
    def counter(self) -> int:
        return self._snap().fail_counter

    @property
    def success_counter(self) -> int:
        return 0  # success_threshold is 1: the half-open trial's success closes at once

    @property
    def opened_at(self) -> datetime | None:
        at = self._snap().opened_at
        return datetime.fromtimestamp(at, UTC) if at else None

    @opened_at.setter
    def opened_at(self, value: datetime | None) -> None:
        _backend_call("set_opened_at", self.service_id, at=value.timestamp() if value else None)


# --- Store selection with the outage fallback ------------------------------------------

_memory = MemoryBackend()
_database = DatabaseBackend()
_redis_backends: dict[str, RedisBackend] = {}
_store_down_until = 0.0
_backend_lock = threading.Lock()


def breaker_store_name() -> str:
    """The configured store: ``settings.BREAKER_STORE``, else redis with REDIS_URL, else database."""
    name = getattr(settings, "BREAKER_STORE", None) or ("redis" if settings.REDIS_URL else "database")
    if name not in STORES:
        raise ValueError(f"BREAKER_STORE={name!r}: use one of {', '.join(STORES)}")
    return name


def _store() -> RedisBackend | DatabaseBackend | None:
    """The configured shared store, or None while it is marked down (or memory is configured)."""
    name = breaker_store_name()
    if name == "memory" or time.monotonic() < _store_down_until:
        return None
    if name == "database":
        return _database
    url = settings.REDIS_URL
    if not url:
        return None
    backend = _redis_backends.get(url)
    if backend is None:
        with _backend_lock:
            backend = _redis_backends.setdefault(url, RedisBackend(url))
    return backend


def _store_failed(exc: Exception) -> None:
    global _store_down_until
    _store_down_until = time.monotonic() + REDIS_RETRY_AFTER_SECONDS
    store = "Redis" if isinstance(exc, redis.RedisError) else "database"
    logger.error("Breaker state store (%s) unreachable, using process-local breaker state: %s", store, exc)
    from registry.alerts import alert_raise  # late: alerts imports the outbox, which the models use

    alert_raise(
        kind="breaker_storage_down", service=None,
        message=f"Circuit-breaker state store ({store}) unreachable: {exc}. "
                "Breakers fall back to process-local state.",
    )


def _backend_call(op: str, *args: Any, **kwargs: Any) -> Any:
    backend = _store()
    if backend is not None:
        try:
            return getattr(backend, op)(*args, **kwargs)
        except (redis.RedisError, DjangoDbError) as exc:  # DjangoDbError: InterfaceError too
            _store_failed(exc)
    return getattr(_memory, op)(*args, **kwargs)


def storage_reset_for_tests() -> None:
    """Forget process-local state and Redis connections (tests switch stores)."""
    global _memory, _store_down_until
    _memory = MemoryBackend()
    _store_down_until = 0.0
    _redis_backends.clear()
    _breakers.clear()


# --- The breaker -------------------------------------------------------------------------


@dataclass
class Permit:
    """Permission to send one call. ``trial`` marks the single half-open trial."""

    breaker: ServiceBreaker
    trial: bool = False
    token: str = ""
    # Closed with no failures counted when acquired: a success has nothing to reset,
    # so reporting it is skipped (one Redis round trip less per call on the hot path).
    clean: bool = False


class ServiceBreaker(pybreaker.CircuitBreaker):
    """One service's breaker: ``acquire`` / ``succeeded`` / ``failed`` around a call, or ``call()``."""

    def __init__(self, service: Service) -> None:
        self.service_id = service.pk
        self.service_name = service.name
        self.config = breaker_config(service)
        super().__init__(
            fail_max=self.config.fail_max,
            reset_timeout=self.config.reset_timeout,
            success_threshold=1,
            state_storage=SharedBreakerStorage(service.pk),
            name=f"service:{service.pk}",
        )
        self._state_storage.ready = True

    @property
    def success_threshold(self) -> int:
        return 1

    @success_threshold.setter
    def success_threshold(self, threshold: int) -> None:
        if threshold != 1:
            raise ValueError("The shared breaker closes on the half-open trial's first success")

    def refresh(self, service: Service) -> None:
        self.service_name = service.name
        self.config = breaker_config(service)
        self.fail_max = self.config.fail_max
        self.reset_timeout = self.config.reset_timeout

    def call(self, func, *args, **kwargs):
        """pybreaker's ``call`` over the shared state, without holding a lock during ``func``.

        Raises ``pybreaker.CircuitBreakerError`` when the breaker is open (or another
        process holds the half-open trial); an exception from ``func`` counts as a failure
        unless pybreaker's ``exclude`` list says otherwise, and is re-raised.
        """
        permit = self.acquire()
        if permit is None:
            raise pybreaker.CircuitBreakerError(f"Circuit breaker of {self.service_name} is open")
        try:
            result = func(*args, **kwargs)
        except Exception as exc:
            if self.is_system_error(exc):
                self.failed(permit, f"{type(exc).__name__}: {exc}")
            else:
                self.succeeded(permit)
            raise
        self.succeeded(permit)
        return result

    def call_async(self, func, *args, **kwargs):  # noqa: D102 - pybreaker's is Tornado-only
        raise NotImplementedError("Not used by the portal")

    def _transitioned(self, t: Transition, actor: str = "") -> None:
        """Record a transition this process made, and tell pybreaker's listeners."""
        if t.old == t.new:
            return
        event_record(self.service_id, self.service_name, t, actor)
        with self._lock:
            # notify=True calls each listener's state_change(breaker, old, new); the storage's
            # counter resets it also triggers change nothing (the store already did).
            self._state = self._create_new_state(t.new, prev_state=self._create_new_state(t.old),
                                                 notify=bool(self._listeners))

    def snapshot(self) -> Snapshot:
        return _backend_call("snapshot", [self.service_id])[self.service_id]

    def acquire(self, *, force: bool = False, lease_seconds: float | None = None) -> Permit | None:
        """A permit to send a call, or None when the breaker is open.

        ``force`` (an operator's "check now") takes the half-open trial even
        before the reset timeout has passed.
        """
        token = uuid.uuid4().hex
        # The trial lease outlives the call; a crashed trial frees the slot when it expires.
        lease_ms = ((lease_seconds or self.config.call_timeout) + 5) * 1000
        old, new, granted, fails = _backend_call(
            "acquire", self.service_id, now=time.time(), reset_timeout=self.config.reset_timeout,
            token=token, force=force, lease_ms=lease_ms,
        )
        if old == CLOSED:
            return Permit(self, clean=not fails)
        if not granted:
            return None
        self._transitioned(Transition(old, new))
        return Permit(self, trial=True, token=token)

    def succeeded(self, permit: Permit) -> str:
        """Report a successful call; returns the state after it."""
        if permit.clean and not permit.trial:
            return CLOSED
        old, new = _backend_call("success", self.service_id, token=permit.token if permit.trial else "")
        self._transitioned(Transition(old, new))
        return new

    def failed(self, permit: Permit, error: str) -> str:
        """Report a failed call; returns the state after it (``open`` if it tripped)."""
        old, new = _backend_call(
            "failure", self.service_id, fail_max=self.config.fail_max, now=time.time(),
            error=error, token=permit.token if permit.trial else "",
        )
        self._transitioned(Transition(old, new, error))
        return new

    def force_open(self, *, reason: str, actor: str = "") -> bool:
        """Open now (health verdict critical, or an operator). True if it changed."""
        old, new = _backend_call("set_state", self.service_id, state=OPEN, now=time.time(), error=reason)
        self._transitioned(Transition(old, new, reason), actor)
        return old != new

    def reset(self, *, actor: str = "", reason: str = "") -> bool:
        """Close now (operator). True if it changed."""
        old, new = _backend_call("set_state", self.service_id, state=CLOSED, now=time.time(), error="")
        self._transitioned(Transition(old, new, reason), actor)
        return old != new

    # pybreaker's own open/close/half_open go through the same atomic path.
    def open(self) -> bool:
        self.force_open(reason="opened")
        return True

    def close(self) -> None:
        self.reset()

    def half_open(self) -> None:
        self.acquire(force=True)


_breakers: dict[int, ServiceBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(service: Service) -> ServiceBreaker:
    """The breaker of one service (cached per process; config refreshed from the row)."""
    breaker = _breakers.get(service.pk)
    if breaker is None:
        with _breakers_lock:
            breaker = _breakers.get(service.pk)
            if breaker is None:
                breaker = _breakers[service.pk] = ServiceBreaker(service)
                return breaker
    breaker.refresh(service)
    return breaker


def breaker_snapshots(service_ids: list[int]) -> dict[int, Snapshot]:
    """Live state of many breakers in one round trip (sweep, admin list)."""
    if not service_ids:
        return {}
    return _backend_call("snapshot", list(service_ids))


def breaker_forget(*, service_id: int) -> None:
    """Drop a deregistered service's shared state."""
    _breakers.pop(service_id, None)
    _backend_call("forget", service_id)
