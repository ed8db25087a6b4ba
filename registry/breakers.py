"""Circuit breakers: one per registered service, shared by every process.

Each service gets a ``ServiceBreaker`` (a ``pybreaker.CircuitBreaker``) whose
state lives in a ``SharedBreakerStorage`` backed by the configured store
(``settings.BREAKER_STORE``): one Redis hash per service id when ``REDIS_URL``
is set, otherwise one database row per service (``registry.models_breaker``), so
the embedded default's web server, workers and beat share one breaker too.

We do not use pybreaker's ``call()``: it holds one process-wide lock for the
whole guarded call, which would serialise concurrent calls to one service.
Instead callers ask for a ``Permit`` before the HTTP call and report the outcome
after it; every state change is one atomic step (a Lua script in Redis, a
compare-and-set UPDATE in the database, a short lock in memory), so exactly one
process records each transition.

Rules:
- closed: calls pass; ``fail_max`` consecutive failures open the breaker.
- open: calls fail fast until ``reset_timeout`` has passed; then ONE caller,
  across all processes, gets the half-open trial (a lease with an expiry).
- half-open: the trial's success closes the breaker, its failure re-opens it.
- Store unreachable: log, raise an alert, and fall back to process-local state
  (which starts closed) so the portal keeps working.

Transitions become ``BreakerEvent`` rows written by a background thread, on its
own database connection, never inside the caller's transaction.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pybreaker
import redis
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections, transaction
from django.db import Error as DjangoDbError
from django.db.models import F

from registry.models import BreakerEvent, BreakerState, Criticality, Service
from registry.models_breaker import BreakerStore

logger = logging.getLogger(__name__)

# The integration guide's presets: (fail_max, reset_timeout s, call timeout s).
PRESETS: dict[str, tuple[int, float, float]] = {
    Criticality.CRITICAL: (5, 30.0, 5.0),
    Criticality.NON_CRITICAL: (3, 60.0, 10.0),
}

CLOSED = BreakerState.CLOSED.value
OPEN = BreakerState.OPEN.value
HALF_OPEN = BreakerState.HALF_OPEN.value

# How long the portal keeps using process-local state after the store failed, before
# trying it again (so an outage costs one connect timeout per period, not per call).
REDIS_RETRY_AFTER_SECONDS = 5.0
STORES = ("redis", "database", "memory")
HEALTH_TRIP_PREFIX = "health critical"


def _prefix() -> str:
    return getattr(settings, "BREAKER_REDIS_PREFIX", "berrys:breaker")


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


@dataclass
class Snapshot:
    state: str
    fail_counter: int
    opened_at: float | None
    last_error: str
    trial_held: bool

    def reset_due(self, reset_timeout: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.state == OPEN and (self.opened_at or 0) + reset_timeout <= now


@dataclass
class Transition:
    old: str
    new: str
    error: str = ""


# --- Storage backends ---------------------------------------------------------------
# Both implement the same atomic operations; each returns the transition it made.

_LUA_ACQUIRE = """
local row = redis.call('HMGET', KEYS[1], 'state', 'fails')
local st = row[1] or 'closed'
if st == 'closed' then return {st, 'closed', 0, tonumber(row[2] or '0')} end
local force = tonumber(ARGV[4])
local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
if force == 0 and st == 'open' and tonumber(ARGV[1]) < opened + tonumber(ARGV[2]) then
  return {st, st, 0}
end
local got
if force == 1 then
  got = redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[5])
else
  got = redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[5])
end
if got then
  redis.call('HSET', KEYS[1], 'state', 'half-open')
  return {st, 'half-open', 1}
end
return {st, st, 0}
"""

_LUA_SUCCESS = """
local st = redis.call('HGET', KEYS[1], 'state') or 'closed'
if st == 'half-open' and ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'fails', 0)
  redis.call('DEL', KEYS[2])
  return {st, 'closed'}
end
if st == 'closed' and tonumber(redis.call('HGET', KEYS[1], 'fails') or '0') > 0 then
  redis.call('HSET', KEYS[1], 'fails', 0)
end
return {st, st}
"""

_LUA_FAILURE = """
local st = redis.call('HGET', KEYS[1], 'state') or 'closed'
if st == 'half-open' and ARGV[4] ~= '' and redis.call('GET', KEYS[2]) == ARGV[4] then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[2], 'fails', 0, 'last_error', ARGV[3])
  redis.call('DEL', KEYS[2])
  return {st, 'open'}
end
if st == 'closed' then
  local n = redis.call('HINCRBY', KEYS[1], 'fails', 1)
  redis.call('HSET', KEYS[1], 'last_error', ARGV[3])
  if n >= tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[2], 'fails', 0)
    return {st, 'open'}
  end
end
return {st, st}
"""

_LUA_SET = """
local st = redis.call('HGET', KEYS[1], 'state') or 'closed'
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'fails', 0, 'opened_at', ARGV[2], 'last_error', ARGV[3])
redis.call('DEL', KEYS[2])
return {st, ARGV[1]}
"""


# The rules, on one row as a dict (state, fails, opened_at, last_error, trial, trial_until).
# The memory and database stores apply these; the Redis scripts above are their twins.


def _fresh_row() -> dict[str, Any]:
    return {"state": CLOSED, "fails": 0, "opened_at": None, "last_error": "", "trial": "",
            "trial_until": 0.0}


def _snapshot_of(r: dict[str, Any], now: float) -> Snapshot:
    return Snapshot(r["state"], r["fails"], r["opened_at"], r["last_error"],
                    bool(r["trial"]) and r["trial_until"] > now)


def _rule_acquire(r, *, now, reset_timeout, token, force, lease_ms) -> tuple[str, str, bool, int]:
    st = r["state"]
    if st == CLOSED:
        return st, st, False, r["fails"]
    if not force and st == OPEN and now < (r["opened_at"] or 0) + reset_timeout:
        return st, st, False, 0
    if force or not (r["trial"] and r["trial_until"] > now):
        r.update(trial=token, trial_until=now + lease_ms / 1000, state=HALF_OPEN)
        return st, HALF_OPEN, True, 0
    return st, st, False, 0


def _rule_success(r, *, token) -> tuple[str, str]:
    st = r["state"]
    if st == HALF_OPEN and token and r["trial"] == token:
        r.update(state=CLOSED, fails=0, trial="")
        return st, CLOSED
    if st == CLOSED:
        r["fails"] = 0
    return st, st


def _rule_failure(r, *, fail_max, now, error, token) -> tuple[str, str]:
    st = r["state"]
    if st == HALF_OPEN and token and r["trial"] == token:
        r.update(state=OPEN, opened_at=now, fails=0, last_error=error, trial="")
        return st, OPEN
    if st == CLOSED:
        r["fails"] += 1
        r["last_error"] = error
        if r["fails"] >= fail_max:
            r.update(state=OPEN, opened_at=now, fails=0)
            return st, OPEN
    return st, st


def _rule_set(r, *, state, now, error) -> tuple[str, str]:
    st = r["state"]
    r.update(state=state, fails=0, opened_at=now, last_error=error, trial="")
    return st, state


class _RuleBackend:
    """The breaker operations of a store that applies the pure rules itself (memory, database):
    each store supplies ``_apply(sid, rule, **kwargs)``, run atomically on one service's row."""

    def _apply(self, sid: int, rule, **kwargs):
        raise NotImplementedError

    def acquire(self, sid, **kwargs) -> tuple[str, str, bool, int]:
        return self._apply(sid, _rule_acquire, **kwargs)

    def success(self, sid, **kwargs) -> tuple[str, str]:
        return self._apply(sid, _rule_success, **kwargs)

    def failure(self, sid, **kwargs) -> tuple[str, str]:
        kwargs["error"] = kwargs["error"][:1000]
        return self._apply(sid, _rule_failure, **kwargs)

    def set_state(self, sid, **kwargs) -> tuple[str, str]:
        kwargs["error"] = kwargs["error"][:1000]
        return self._apply(sid, _rule_set, **kwargs)


class _MemoryBackend(_RuleBackend):
    """Process-local breaker state (the fallback when the configured store is unreachable)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[int, dict[str, Any]] = {}

    def _row(self, sid: int) -> dict[str, Any]:
        return self._rows.setdefault(sid, _fresh_row())

    def snapshot(self, sids: list[int]) -> dict[int, Snapshot]:
        now = time.time()
        with self._lock:
            return {sid: _snapshot_of(self._row(sid), now) for sid in sids}

    def _apply(self, sid: int, rule, **kwargs):
        with self._lock:
            return rule(self._row(sid), **kwargs)

    def forget(self, sid: int) -> None:
        with self._lock:
            self._rows.pop(sid, None)


class BreakerStoreContended(DatabaseError):
    """A row kept changing under us: treated like an unreachable store (fallback)."""


class _DatabaseBackend(_RuleBackend):
    """Breaker state in ``registry_breaker_store``: one row per service id.

    A change reads the row, applies the rule, and writes it back with
    ``UPDATE … WHERE version = <read version>``: of two processes racing for the
    same transition (the half-open trial), exactly one UPDATE matches; the other
    re-reads and sees the new state. A service with no row is closed; the row is
    inserted the first time its state changes. The read of a closed breaker (every
    call's ``acquire``) is one primary-key SELECT and writes nothing.
    """

    COLUMNS = ("state", "fails", "opened_at", "last_error", "trial_token", "trial_until", "version")
    ATTEMPTS = 50

    @staticmethod
    def _as_row(values: dict[str, Any]) -> dict[str, Any]:
        row = dict(values)
        row["trial"] = row.pop("trial_token")
        return row

    def _read(self, sids: list[int]) -> dict[int, dict[str, Any]]:
        rows = BreakerStore.objects.filter(service_id__in=sids).values("service_id", *self.COLUMNS)
        return {r.pop("service_id"): self._as_row(r) for r in rows}

    def snapshot(self, sids: list[int]) -> dict[int, Snapshot]:
        now = time.time()
        rows = self._read(list(sids))
        return {sid: _snapshot_of(rows.get(sid) or _fresh_row(), now) for sid in sids}

    def _apply(self, sid: int, rule, **kwargs):
        if connections["default"].in_atomic_block:
            # Inside a caller's transaction: a savepoint, so a failed statement here
            # (the store "unreachable") does not break the caller's transaction.
            with transaction.atomic():
                return self._apply_now(sid, rule, **kwargs)
        return self._apply_now(sid, rule, **kwargs)

    def _apply_now(self, sid: int, rule, **kwargs):
        for _ in range(self.ATTEMPTS):
            row = self._read([sid]).get(sid)
            if row is None:
                row = _fresh_row()
                probe = dict(row)
                result = rule(probe, **kwargs)
                if probe == row:
                    return result  # a closed breaker with nothing to count: no row needed
                BreakerStore.objects.bulk_create([BreakerStore(service_id=sid)], ignore_conflicts=True)
                continue
            new = dict(row)
            result = rule(new, **kwargs)
            changes = {key: value for key, value in new.items() if value != row[key]}
            if not changes:
                return result
            if "trial" in changes:
                changes["trial_token"] = changes.pop("trial")
            updated = BreakerStore.objects.filter(service_id=sid, version=row["version"]).update(
                **changes, version=F("version") + 1
            )
            if updated == 1:
                return result
        raise BreakerStoreContended(f"breaker row of service {sid} changed {self.ATTEMPTS} times in a row")

    def forget(self, sid: int) -> None:
        BreakerStore.objects.filter(service_id=sid).delete()


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _RedisBackend:
    """Breaker state in one Redis hash per service: ``<prefix>:<service id>``."""

    def __init__(self, url: str) -> None:
        # Short timeouts: a dead Redis must cost a fraction of a second, not a call's budget.
        self.client = redis.Redis.from_url(
            url, socket_timeout=0.3, socket_connect_timeout=0.3, retry_on_timeout=False,
        )
        self._acquire = self.client.register_script(_LUA_ACQUIRE)
        self._success = self.client.register_script(_LUA_SUCCESS)
        self._failure = self.client.register_script(_LUA_FAILURE)
        self._set = self.client.register_script(_LUA_SET)

    @staticmethod
    def keys(sid: int) -> list[str]:
        base = f"{_prefix()}:{sid}"
        return [base, base + ":trial"]

    def snapshot(self, sids: list[int]) -> dict[int, Snapshot]:
        pipe = self.client.pipeline(transaction=False)
        for sid in sids:
            main, trial = self.keys(sid)
            pipe.hmget(main, "state", "fails", "opened_at", "last_error")
            pipe.exists(trial)
        raw = pipe.execute()
        out = {}
        for i, sid in enumerate(sids):
            state, fails, opened_at, last_error = raw[2 * i]
            out[sid] = Snapshot(
                _s(state) if state else CLOSED,
                int(fails or 0),
                float(opened_at) if opened_at else None,
                _s(last_error) if last_error else "",
                bool(raw[2 * i + 1]),
            )
        return out

    def acquire(self, sid, *, now, reset_timeout, token, force, lease_ms) -> tuple[str, str, bool, int]:
        old, new, granted, *fails = self._acquire(
            keys=self.keys(sid), args=[repr(now), repr(reset_timeout), token, int(force), int(lease_ms)]
        )
        return _s(old), _s(new), bool(granted), int(fails[0]) if fails else 0

    def success(self, sid, *, token) -> tuple[str, str]:
        old, new = self._success(keys=self.keys(sid), args=[token or ""])
        return _s(old), _s(new)

    def failure(self, sid, *, fail_max, now, error, token) -> tuple[str, str]:
        old, new = self._failure(
            keys=self.keys(sid), args=[fail_max, repr(now), error[:1000], token or ""]
        )
        return _s(old), _s(new)

    def set_state(self, sid, *, state, now, error) -> tuple[str, str]:
        old, new = self._set(keys=self.keys(sid), args=[state, repr(now), error[:1000]])
        return _s(old), _s(new)

    def forget(self, sid: int) -> None:
        self.client.delete(*self.keys(sid))


class SharedBreakerStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker storage over the shared backend, with the Redis-outage fallback.

    The pybreaker-facing properties (``state``, ``counter``, ``opened_at``) let
    pybreaker tooling read a breaker; the portal itself uses the atomic
    operations in ``ServiceBreaker``.
    """

    def __init__(self, service_id: int) -> None:
        super().__init__(breaker_store_name())
        self.service_id = service_id
        # pybreaker's constructor reads the state once; answering "closed" there
        # saves a Redis round trip per breaker (the live state is read per call).
        self.ready = False

    @property
    def state(self) -> str:
        return self._snap().state if self.ready else CLOSED

    @state.setter
    def state(self, state: str) -> None:
        _backend_call("set_state", self.service_id, state=state, now=time.time(), error="")

    def _snap(self) -> Snapshot:
        return _backend_call("snapshot", [self.service_id])[self.service_id]

    @property
    def counter(self) -> int:
        return self._snap().fail_counter

    @property
    def success_counter(self) -> int:
        return 0

    @property
    def opened_at(self) -> datetime | None:
        at = self._snap().opened_at
        return datetime.fromtimestamp(at, UTC) if at else None

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:  # set together with the state
        pass


# --- Store selection with the outage fallback ------------------------------------------

_memory = _MemoryBackend()
_database = _DatabaseBackend()
_redis_backends: dict[str, _RedisBackend] = {}
_store_down_until = 0.0
_backend_lock = threading.Lock()


def breaker_store_name() -> str:
    """The configured store: ``settings.BREAKER_STORE``, else redis with REDIS_URL, else database."""
    name = getattr(settings, "BREAKER_STORE", None) or ("redis" if settings.REDIS_URL else "database")
    if name not in STORES:
        raise ValueError(f"BREAKER_STORE={name!r}: use one of {', '.join(STORES)}")
    return name


def _store() -> _RedisBackend | _DatabaseBackend | None:
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
            backend = _redis_backends.setdefault(url, _RedisBackend(url))
    return backend


def _store_failed(exc: Exception) -> None:
    global _store_down_until
    _store_down_until = time.monotonic() + REDIS_RETRY_AFTER_SECONDS
    store = "Redis" if isinstance(exc, redis.RedisError) else "database"
    logger.error("Breaker state store (%s) unreachable, using process-local breaker state: %s", store, exc)
    from registry.alerts import alert_raise  # late: alerts imports models that import us

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
    _memory = _MemoryBackend()
    _store_down_until = 0.0
    _redis_backends.clear()
    _breakers.clear()


# --- Transition recording --------------------------------------------------------------

_event_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="breaker-events")
_pending: list[Future] = []
_pending_lock = threading.Lock()


def _write_event(service_id: int, service_name: str, t: Transition, actor: str, at: datetime) -> None:
    close_old_connections()
    try:
        service = Service.objects.filter(pk=service_id).first()
        BreakerEvent.objects.create(
            service=service, service_name=service_name, old_state=t.old, new_state=t.new,
            at=at, last_error=t.error[:5000], actor=actor,
        )
        # A trip caused by the health verdict is already announced by the "critical" alert.
        if t.new == OPEN and service is not None and not t.error.startswith(HEALTH_TRIP_PREFIX):
            from registry.alerts import alert_raise

            alert_raise(
                kind="breaker_trip", service=service,
                message=f"Circuit breaker of {service.name} opened ({t.old} → open). {t.error}".strip(),
            )
    except Exception:  # noqa: BLE001 - recording must never take the caller down
        logger.exception("Could not record breaker transition of service %s", service_id)
    finally:
        # This thread's own connection: kept while more events wait (a connection per event
        # cost ~30 ms each: 100 services turning critical took 3 s), closed once idle.
        if _event_writer._work_queue.empty():
            connections.close_all()


def _record(service_id: int, service_name: str, t: Transition, actor: str = "") -> None:
    if t.old == t.new:
        return
    logger.info("breaker %s (%s): %s -> %s %s", service_name, service_id, t.old, t.new, t.error)
    # The time is taken here, when the transition happened, not when the writer gets to it.
    fut = _event_writer.submit(_write_event, service_id, service_name, t, actor, datetime.now(UTC))
    with _pending_lock:
        _pending[:] = [f for f in _pending if not f.done()]
        _pending.append(fut)


def events_flush(timeout: float = 10.0) -> None:
    """Wait until every transition recorded so far is written (tests, commands)."""
    with _pending_lock:
        pending = list(_pending)
    for fut in pending:
        fut.result(timeout=timeout)


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
    """One service's breaker. Use ``acquire`` / ``succeeded`` / ``failed`` around a call."""

    def __init__(self, service: Service) -> None:
        self.service_id = service.pk
        self.service_name = service.name
        self.config = breaker_config(service)
        super().__init__(
            fail_max=self.config.fail_max,
            reset_timeout=self.config.reset_timeout,
            state_storage=SharedBreakerStorage(service.pk),
            name=f"service:{service.pk}",
        )
        self._state_storage.ready = True

    def refresh(self, service: Service) -> None:
        self.service_name = service.name
        self.config = breaker_config(service)
        self.fail_max = self.config.fail_max
        self.reset_timeout = self.config.reset_timeout

    # pybreaker's call() would hold a process-wide lock during the call: refuse it.
    def call(self, func, *args, **kwargs):  # noqa: D102
        raise NotImplementedError("Use acquire()/succeeded()/failed(); call() serialises callers")

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
        _record(self.service_id, self.service_name, Transition(old, new))
        return Permit(self, trial=True, token=token)

    def succeeded(self, permit: Permit) -> str:
        """Report a successful call; returns the state after it."""
        if permit.clean and not permit.trial:
            return CLOSED
        old, new = _backend_call("success", self.service_id, token=permit.token if permit.trial else "")
        _record(self.service_id, self.service_name, Transition(old, new))
        return new

    def failed(self, permit: Permit, error: str) -> str:
        """Report a failed call; returns the state after it (``open`` if it tripped)."""
        old, new = _backend_call(
            "failure", self.service_id, fail_max=self.config.fail_max, now=time.time(),
            error=error, token=permit.token if permit.trial else "",
        )
        _record(self.service_id, self.service_name, Transition(old, new, error))
        return new

    def force_open(self, *, reason: str, actor: str = "") -> bool:
        """Open now (health verdict critical, or an operator). True if it changed."""
        old, new = _backend_call("set_state", self.service_id, state=OPEN, now=time.time(), error=reason)
        _record(self.service_id, self.service_name, Transition(old, new, reason), actor)
        return old != new

    def reset(self, *, actor: str = "", reason: str = "") -> bool:
        """Close now (operator). True if it changed."""
        old, new = _backend_call("set_state", self.service_id, state=CLOSED, now=time.time(), error="")
        _record(self.service_id, self.service_name, Transition(old, new, reason), actor)
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
