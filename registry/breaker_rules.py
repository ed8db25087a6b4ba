"""The breaker state machine's rules and the stores that apply them in-process or in the database.

``registry.breakers`` picks a store and wraps it in a pybreaker breaker; this module is the
rules themselves (pure functions over one breaker's row) and two stores that run them
atomically: process memory (a lock) and the database (compare-and-set on ``version``).
The Redis store (``registry.breaker_redis``) runs the same rules as Lua scripts.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.db.models import F

from registry.models import BreakerState
from registry.models_breaker import BreakerStore

CLOSED = BreakerState.CLOSED.value
OPEN = BreakerState.OPEN.value
HALF_OPEN = BreakerState.HALF_OPEN.value


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


# The rules, on one row as a dict (state, fails, opened_at, last_error, trial, trial_until).
# The memory and database stores apply these; the Redis scripts (registry.breaker_redis) are their twins.


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


def _rule_opened_at(r, *, at) -> tuple[str, str]:
    st = r["state"]
    r["opened_at"] = at
    return st, st


class RuleBackend:
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

    def set_opened_at(self, sid, **kwargs) -> tuple[str, str]:
        return self._apply(sid, _rule_opened_at, **kwargs)


class MemoryBackend(RuleBackend):
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


class DatabaseBackend(RuleBackend):
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
