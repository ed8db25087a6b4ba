"""Health monitoring: probes, verdicts, thresholds, the sweep, TTL, deregistration, pruning.

The sweep (``health_sweep``, run by Celery beat every few seconds and by
``manage.py check_health``):

1. takes a global lock (cache ``add`` = Redis ``SET NX`` with a TTL) so only one
   sweep coordinates at a time, whatever the number of beats and workers;
2. claims due services in small batches with ``SELECT … FOR UPDATE SKIP LOCKED``
   and pushes their ``next_check_at`` forward in the same transaction, so
   helper workers (``health_sweep_share``) running the same loop never probe a
   service twice;
3. probes in a thread pool with a requests Session per thread, keeping up to
   ``HEALTH_SWEEP_MAX_IN_FLIGHT`` probes in flight and claiming more as slots
   free up, so hanging services never hold back the others;
4. goes through each service's circuit breaker (the same one the ServiceClient
   uses): an open breaker withholds the probe ("breaker open"), the first probe
   after its reset timeout is the half-open trial, failed probes count toward
   tripping it, and a service turning critical opens it at once;
5. writes results in batches: snapshots with ``bulk_create``, services with one
   ``UPDATE … FROM (VALUES …)`` per chunk (guarded on the status read, so a
   concurrent maintenance switch is never overwritten), status changes in bulk;
6. evaluates TTL services and deregisters services critical for too long.

No network I/O happens inside a transaction; alerts go out after commit.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache
from django.db import connection, connections, transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from berrys_portal import metrics
from berrys_portal.errors import InvalidInput
from berrys_portal.json_input import json_loads_bounded, json_value_storable_check, text_scrub
from berrys_portal.logging import log_context
from registry import egress, prober
from registry.alerts import alert_raise
from registry.breakers import (
    HEALTH_TRIP_PREFIX,
    OPEN,
    Permit,
    ServiceBreaker,
    Snapshot,
    breaker_for,
    breaker_forget,
    breaker_snapshots,
)
from registry.discovery import recent_instances
from registry.models import AlertKind, HealthSnapshot, HealthStatus, Service, StatusChange

logger = logging.getLogger(__name__)

SWEEP_LOCK_KEY = "health:sweep:lock"
BREAKER_OPEN_REASON = "breaker open"
PROBER_STALL_MARGIN_SECONDS = 30.0


# --- Verdicts ---------------------------------------------------------------------------


def _falsy_dependency(value: Any) -> bool:
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return value.lower() in {"down", "unhealthy", "false", "error", "fail", "failed"}
    if isinstance(value, dict):
        if "status" in value:
            return _falsy_dependency(value["status"])
        if "healthy" in value:
            return _falsy_dependency(value["healthy"])
    return False


_PLAIN_WORD = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")


def _dep_name(name: Any) -> str:
    text = str(name)
    return text if _PLAIN_WORD.match(text.lower()) else "?"


def _dependencies_down(body: dict) -> list[str]:
    down = [key for key in ("database", "cache") if key in body and _falsy_dependency(body[key])]
    deps = body.get("dependencies")
    if isinstance(deps, dict):
        down += [f"dependencies.{_dep_name(name)}" for name, value in deps.items() if _falsy_dependency(value)]
    elif isinstance(deps, list):
        for item in deps:
            if isinstance(item, dict) and _falsy_dependency(item):
                down.append(f"dependencies.{_dep_name(item.get('name', '?'))}")
    elif deps is not None and _falsy_dependency(deps):
        down.append("dependencies")
    return down


def _storable(value: Any) -> Any:
    """A service's decoded health answer as the database can store it: NUL and lone surrogates
    (which PostgreSQL's jsonb refuses, failing the whole batch's write) become U+FFFD, NaN and
    infinities null. One C-level check decides; the walk runs only for a bad answer."""
    try:
        json_value_storable_check(value)
        return value
    except InvalidInput:
        return _scrubbed(value)


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return text_scrub(value)
    if isinstance(value, dict):
        return {text_scrub(str(k)): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def probe_verdict(
    *, http_status: int | None, body: Any, latency_ms: float | None,
    slow_threshold_ms: int | None, error: str = "",
) -> tuple[str, str, dict]:
    """(status, reason, details) of one probe, by the integration guide's body.

    passing: 2xx with no body, a non-JSON body, or ``status`` "healthy";
    warning: 2xx but slow, or a dependency reported down while still "healthy";
    critical: no answer, a non-2xx answer, or ``status`` "unhealthy".
    """
    details: dict[str, Any] = {}
    if isinstance(body, dict):
        details = {k: body[k] for k in ("status", "database", "cache", "dependencies", "timestamp") if k in body}
    if error:
        return HealthStatus.CRITICAL, error, details
    if http_status is None or not 200 <= http_status < 300:
        return HealthStatus.CRITICAL, f"HTTP {http_status}", details
    reported = str(body.get("status", "healthy")).lower() if isinstance(body, dict) else "healthy"
    if reported == "unhealthy":
        down = _dependencies_down(body)
        return HealthStatus.CRITICAL, "reports unhealthy" + (f" ({', '.join(down)} down)" if down else ""), details
    if isinstance(body, dict):
        down = _dependencies_down(body)
        if down:
            details["down"] = down
            return HealthStatus.WARNING, f"dependency down: {', '.join(down)}", details
        if reported not in {"healthy", "ok", "pass", "passing", "up"}:
            # The reason is readable with a `read` key: name only a short, plain word.
            shown = repr(reported) if _PLAIN_WORD.match(reported) else "a non-standard status"
            return HealthStatus.WARNING, f"reports status {shown}", details
    if slow_threshold_ms is not None and latency_ms is not None and latency_ms > slow_threshold_ms:
        return HealthStatus.WARNING, f"slow: {latency_ms:.0f} ms > {slow_threshold_ms} ms", details
    return HealthStatus.PASSING, "", details


def status_next(service: Service, verdict: str, reason: str) -> tuple[str, str, int, int]:
    """Apply the service's thresholds: (status, reason, consecutive failures, successes).

    A service never checked before takes its first verdict at once. Entering
    critical needs ``failures_before_critical`` failed probes in a row; leaving
    it needs ``successes_before_passing`` good ones. Passing ↔ warning is immediate.
    """
    first = service.last_checked_at is None or service.status == HealthStatus.UNKNOWN
    if verdict == HealthStatus.CRITICAL:
        failures, successes = service.consecutive_failures + 1, 0
        if first or service.status == HealthStatus.CRITICAL or failures >= service.failures_before_critical:
            return HealthStatus.CRITICAL, reason, failures, successes
        return service.status, service.status_reason, failures, successes
    failures, successes = 0, service.consecutive_successes + 1
    if service.status == HealthStatus.CRITICAL and not first and successes < service.successes_before_passing:
        return service.status, service.status_reason, failures, successes
    return verdict, reason, failures, successes


# --- Probing ----------------------------------------------------------------------------


@dataclass
class Plan:
    service: Service
    breaker: ServiceBreaker | None = None
    permit: Permit | None = None
    snapshot: Snapshot | None = None
    withheld: str = ""


@dataclass
class Outcome:
    plan: Plan
    checked_at: datetime
    http_status: int | None = None
    latency_ms: float | None = None
    body: Any = None
    error: str = ""  # a category: this is what `read` keys see (status_reason)
    detail: str = ""  # what happened, raw: kept in the staff-only snapshot row
    deferred: bool = False  # not sent (its destination is saturated): try again later


def _redirect_host(location: str) -> str:
    host = urlsplit(location).hostname if location else None
    if not host:
        return "(same host)" if location else "(no location)"
    return host if _HOST_SHOWN.match(host) else "(unreadable host)"


_HOST_SHOWN = re.compile(r"^[A-Za-z0-9.:_-]{1,100}$")


def _timeout_of(svc: Service) -> float:
    """The probe timeout, clamped to HEALTH_MAX_TIMEOUT_SECONDS (rows older than the bound)."""
    return min(svc.check_timeout_seconds, settings.HEALTH_MAX_TIMEOUT_SECONDS)


def _interval_of(svc: Service) -> timedelta:
    return timedelta(seconds=max(svc.check_interval_seconds, settings.HEALTH_MIN_INTERVAL_SECONDS))


def _outcome(plan: Plan, response: prober.Response | None, error: BaseException | None, seconds: float) -> Outcome:
    """What one probe saw, in the sweep's terms (runs on the prober's loop thread)."""
    svc = plan.service
    outcome = Outcome(plan=plan, checked_at=timezone.now() - timedelta(seconds=seconds), latency_ms=seconds * 1000)
    if response is not None:
        outcome.http_status = response.status
        if 300 <= response.status < 400:
            # Never followed: the answer is the redirect, and it fails the check.
            outcome.error = f"redirected to {_redirect_host(response.location or '')}"
            outcome.detail = f"HTTP {response.status} Location: {(response.location or '')[:300]}"
        elif response.body:
            try:
                outcome.body = _storable(json_loads_bounded(response.body))
            except ValueError:  # not JSON, too deep, or cut at the size cap: the status decides
                outcome.body = None
        return outcome
    outcome.detail = f"{type(error).__name__}: {error}"[:500]
    if isinstance(error, prober.ProbeDeferred):
        outcome.deferred, outcome.latency_ms = True, None
    elif isinstance(error, prober.ProbeTimeout):
        outcome.error = f"timed out after {_timeout_of(svc):g} s"
    elif isinstance(error, egress.EgressDenied | egress.EgressLookupError):
        outcome.latency_ms, outcome.error = None, error.category
    elif isinstance(error, prober.ProbeConnectionError | prober.ProbeProtocolError):
        outcome.error = error.category
    elif isinstance(error, ValueError):
        outcome.latency_ms, outcome.error = None, "bad health URL"
    else:
        outcome.latency_ms, outcome.error = None, "probe error"
    return outcome


def _probe_submit(plans: list[Plan], results: queue.SimpleQueue, gate: prober.Gate) -> None:
    def done(plan: Plan, response, error, seconds: float) -> None:
        try:
            results.put(_outcome(plan, response, error, seconds))
        except BaseException as exc:  # noqa: BLE001 - the sweep waits for exactly one result per probe
            results.put(Outcome(plan=plan, checked_at=timezone.now(), error=f"probe error: {exc!r}"))

    prober.prober().submit(
        plans, url_of=lambda plan: plan.service.health_url,
        timeout_of=lambda plan: _timeout_of(plan.service), done=done, gate=gate,
        max_body=settings.HEALTH_PROBE_MAX_BODY_BYTES,
    )


# --- Claiming -----------------------------------------------------------------------------


def _probed() -> Q:
    return Q(ttl_seconds__isnull=True) & ~Q(health_url="") & ~Q(status=HealthStatus.MAINTENANCE)


def _claim(*, now: datetime, batch_size: int, service_ids: list[int] | None, lease: timedelta) -> list[Service]:
    """Lock a batch of due services (skipping rows other sweepers hold) and push them forward."""
    qs = Service.objects.filter(_probed())
    if service_ids is None:
        qs = qs.filter(Q(next_check_at__isnull=True) | Q(next_check_at__lte=now)).order_by(
            F("next_check_at").asc(nulls_first=True), "id"
        )
    else:
        qs = qs.filter(id__in=service_ids).order_by("id")
    if connection.vendor == "postgresql":
        return _claim_postgres(qs, batch_size=batch_size, until=now + lease)
    with transaction.atomic():
        ids = list(qs.select_for_update(skip_locked=True).values_list("id", flat=True)[:batch_size])
        if ids:
            Service.objects.filter(id__in=ids).update(next_check_at=now + lease)
    return list(Service.objects.filter(id__in=ids)) if ids else []


def _claim_postgres(qs, *, batch_size: int, until: datetime) -> list[Service]:
    """Lock, push forward and fetch a batch in ONE statement (one round trip).

    FOR NO KEY UPDATE: rows inserted elsewhere that point at a service
    (snapshots, breaker events, alerts) take KEY SHARE locks on it; those must
    not make the sweep skip the service.
    """
    with transaction.atomic():  # Django compiles FOR UPDATE only inside a transaction
        inner, params = (
            qs.select_for_update(skip_locked=True, no_key=True).values("id")[:batch_size]
            .query.sql_with_params()
        )
        table = Service._meta.db_table
        sql = f"UPDATE {table} SET next_check_at = %s WHERE id IN ({inner}) RETURNING *"
        return list(Service.objects.raw(sql, [until, *params]))


def _plan(services: list[Service], *, force: bool) -> list[Plan]:
    """Decide, per service, whether its breaker lets the probe go (one Redis round trip)."""
    snaps = breaker_snapshots([s.pk for s in services])
    plans = []
    for svc in services:
        breaker = breaker_for(svc)
        snap = snaps[svc.pk]
        plan = Plan(service=svc, breaker=breaker, snapshot=snap)
        if snap.state == "closed":
            plan.permit = Permit(breaker)
        elif force or snap.state == "half-open" or snap.reset_due(breaker.config.reset_timeout):
            plan.permit = breaker.acquire(force=force, lease_seconds=_timeout_of(svc))
            if plan.permit is None:
                plan.withheld = f"{BREAKER_OPEN_REASON} (trial in progress)"
        else:
            plan.withheld = BREAKER_OPEN_REASON
        plans.append(plan)
    return plans


# --- Applying results -----------------------------------------------------------------------


@dataclass
class Row:
    """The new state of one service after its probe."""

    service: Service
    old_status: str
    status: str
    reason: str
    fails: int
    successes: int
    checked_at: datetime
    next_at: datetime
    latency_ms: float | None
    snapshot: HealthSnapshot | None
    verdict: str


@dataclass
class SweepReport:
    claimed: int = 0
    probed: int = 0
    withheld: int = 0
    trials: int = 0
    changes: int = 0
    ttl_expired: int = 0
    deregistered: int = 0
    skipped_locked: bool = False
    deferred: int = 0
    seconds: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)  # only with keep_rows (check_health's table)


def _row_for(outcome: Outcome) -> Row:
    plan, svc = outcome.plan, outcome.plan.service
    interval = _interval_of(svc)
    if plan.withheld:
        # Not sent: keep it critical until the breaker lets a trial through,
        # and come back as soon as the reset timeout has passed.
        snap = plan.snapshot
        reopen = (
            datetime.fromtimestamp((snap.opened_at or 0) + plan.breaker.config.reset_timeout, tz=UTC)
            if snap and snap.state == OPEN else outcome.checked_at + interval
        )
        next_at = max(outcome.checked_at + timedelta(seconds=1), min(outcome.checked_at + interval, reopen))
        snapshot = HealthSnapshot(
            service=svc, checked_at=outcome.checked_at, status=HealthStatus.CRITICAL,
            error=plan.withheld, details={"withheld": True},
        )
        return Row(svc, svc.status, HealthStatus.CRITICAL, plan.withheld, svc.consecutive_failures,
                   0, outcome.checked_at, next_at, None, snapshot, HealthStatus.CRITICAL)

    verdict, reason, details = probe_verdict(
        http_status=outcome.http_status, body=outcome.body, latency_ms=outcome.latency_ms,
        slow_threshold_ms=svc.slow_threshold_ms, error=outcome.error,
    )
    if outcome.latency_ms is not None:
        metrics.observe_probe(service=svc.name, service_type=svc.type,
                              latency_seconds=outcome.latency_ms / 1000, outcome=verdict)
    trial = plan.permit is not None and plan.permit.trial
    if trial:
        details["breaker_trial"] = True
        if verdict == HealthStatus.CRITICAL:
            status, reason = HealthStatus.CRITICAL, f"breaker trial failed: {reason}"
            fails, successes = svc.consecutive_failures + 1, 0
        else:  # the trial passed: breaker closed, status follows the verdict at once
            status, fails, successes = verdict, 0, 1
    else:
        status, reason, fails, successes = status_next(svc, verdict, reason)
    if plan.breaker is not None and plan.permit is not None:
        if status == HealthStatus.CRITICAL and not trial:
            # Critical opens the breaker at once: callers fail fast instead of spending fail_max calls.
            plan.breaker.force_open(reason=f"{HEALTH_TRIP_PREFIX}: {reason}")
        elif verdict == HealthStatus.CRITICAL:
            # Counts toward tripping. A failed trial re-opens a breaker the critical
            # alert already announced, hence the prefix (no second alert).
            error = f"{HEALTH_TRIP_PREFIX}: {reason}" if trial else f"health probe: {reason}"
            plan.breaker.failed(plan.permit, error)
        elif trial or (plan.snapshot and plan.snapshot.fail_counter):
            plan.breaker.succeeded(plan.permit)
    next_at = outcome.checked_at + interval
    if status == HealthStatus.CRITICAL and plan.breaker is not None:
        # Come back for the half-open trial when the reset timeout ends.
        next_at = outcome.checked_at + min(interval, timedelta(seconds=plan.breaker.config.reset_timeout))
    snapshot = HealthSnapshot(
        service=svc, checked_at=outcome.checked_at, status=verdict, http_status=outcome.http_status,
        latency_ms=outcome.latency_ms,
        error=outcome.detail or outcome.error or (reason if verdict != HealthStatus.PASSING else ""),
        details=details,
    )
    return Row(svc, svc.status, status, reason[:500], fails, successes, outcome.checked_at,
               next_at, outcome.latency_ms, snapshot, verdict)


_UPDATE_SQL = """
UPDATE registry_service AS s SET
  status = v.status, status_reason = v.reason, status_changed_at = v.changed_at,
  last_checked_at = v.checked_at, next_check_at = v.next_at, consecutive_failures = v.fails,
  consecutive_successes = v.successes, critical_since = v.critical_since, last_latency_ms = v.latency
FROM unnest(%s::bigint[], %s::varchar[], %s::varchar[], %s::varchar[], %s::timestamptz[],
            %s::timestamptz[], %s::timestamptz[], %s::int[], %s::int[], %s::timestamptz[], %s::float8[])
  AS v(id, old_status, status, reason, changed_at, checked_at, next_at, fails, successes,
       critical_since, latency)
WHERE s.id = v.id AND s.status = v.old_status
RETURNING s.id
"""


def _fields(row: Row) -> tuple:
    svc = row.service
    changed = row.status != row.old_status
    changed_at = row.checked_at if changed else svc.status_changed_at
    if row.status == HealthStatus.CRITICAL:
        critical_since = svc.critical_since if (svc.critical_since and not changed) else row.checked_at
    else:
        critical_since = None
    return (svc.pk, row.old_status, row.status, row.reason, changed_at, row.checked_at, row.next_at,
            row.fails, row.successes, critical_since, row.latency_ms)


def _update_services(rows: list[Row]) -> set[int]:
    """Write the rows' new state; returns the ids actually updated (status unchanged meanwhile)."""
    updated: set[int] = set()
    if connection.vendor == "postgresql":
        # One statement, eleven array parameters (not eleven placeholders per row).
        columns = [list(col) for col in zip(*(_fields(row) for row in rows), strict=True)]
        with connection.cursor() as cursor:
            cursor.execute(_UPDATE_SQL, columns)
            updated.update(r[0] for r in cursor.fetchall())
        return updated
    for row in rows:  # the embedded SQLite default: fine for a demo's handful of services
        (pk, old, status, reason, changed_at, checked_at, next_at, fails, successes, crit, latency) = _fields(row)
        n = Service.objects.filter(pk=pk, status=old).update(
            status=status, status_reason=reason, status_changed_at=changed_at, last_checked_at=checked_at,
            next_check_at=next_at, consecutive_failures=fails, consecutive_successes=successes,
            critical_since=crit, last_latency_ms=latency,
        )
        if n:
            updated.add(pk)
    return updated


def _alert_for_change(service: Service, old: str, new: str, reason: str) -> None:
    if new == HealthStatus.CRITICAL:
        alert_raise(kind=AlertKind.CRITICAL, service=service,
                    message=f"{service.name} ({service.type}) is critical: {reason or 'no reason given'}")
    elif old == HealthStatus.CRITICAL and new in (HealthStatus.PASSING, HealthStatus.WARNING):
        alert_raise(kind=AlertKind.RECOVERED, service=service,
                    message=f"{service.name} ({service.type}) recovered: now {new}")


def _copy_rows(model, columns: list[str], values: list[tuple]) -> None:
    """Insert many rows with COPY (PostgreSQL), or bulk_create elsewhere."""
    if not values:
        return
    if connection.vendor == "postgresql":
        table = model._meta.db_table
        with connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in values:
                    copy.write_row([json.dumps(v) if isinstance(v, dict | list) else v for v in row])
        return
    # The model constructor takes a foreign key's column name (``service_id``) with a raw
    # id; stripping ``_id`` would hand an int to the relation and raise ValueError.
    model.objects.bulk_create([model(**dict(zip(columns, row, strict=True))) for row in values])


def _write(rows: list[Row]) -> int:
    """Persist one group of results in one short transaction; returns status changes written."""
    if not rows:
        return 0
    changes: list[Row] = []
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Health results are re-measured every interval: losing the last fraction
            # of a second of them in a database crash is acceptable, waiting for a
            # WAL flush per group under load is not.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        updated = _update_services(rows)
        _copy_rows(
            HealthSnapshot,
            ["service_id", "checked_at", "status", "http_status", "latency_ms", "error", "details"],
            [(r.service.pk, s.checked_at, s.status, s.http_status, s.latency_ms, s.error, s.details)
             for r in rows if (s := r.snapshot) is not None and r.service.pk in updated],
        )
        changes = [r for r in rows if r.service.pk in updated and r.status != r.old_status]
        _copy_rows(
            StatusChange,
            ["service_id", "service_name", "service_type", "old_status", "new_status", "reason", "at"],
            [(r.service.pk, r.service.name, r.service.type, r.old_status, r.status, r.reason, r.checked_at)
             for r in changes],
        )
        for r in changes:
            _alert_for_change(r.service, r.old_status, r.status, r.reason)
    if changes:
        recent_instances.forget()  # bulk SQL sends no post_save: this process's client must not lag
    return len(changes)


# --- The sweep ---------------------------------------------------------------------------------


def health_sweep_run(
    *,
    service_ids: list[int] | None = None,
    force: bool = False,
    batch_size: int | None = None,
    max_in_flight: int | None = None,
    max_queued: int | None = None,
    concurrency: int | None = None,
    keep_rows: bool = False,
    detach_after: float | None = None,
) -> SweepReport:
    """Claim, probe and record due services until none is left (no global lock; see health_sweep).

    The calling thread claims and dispatches; results are evaluated and written by
    one writer thread (its own database connection) as they arrive, so claiming new
    work never waits for the database writes of earlier results. Call it outside a
    transaction.

    ``detach_after``: once everything due is dispatched, wait at most this many
    seconds for the remaining results, then leave them to a background thread of
    this process (which writes them as they arrive) and return — the beat sweep
    uses it so that slow or black-holed destinations never hold the sweep lock.
    The report then counts only the results seen before returning.
    """
    started = time.perf_counter()
    batch_size = batch_size or settings.HEALTH_SWEEP_BATCH_SIZE
    gate = prober.Gate(
        max_in_flight=max(max_in_flight or settings.HEALTH_SWEEP_MAX_IN_FLIGHT, 1),
        concurrency=max(concurrency or settings.HEALTH_SWEEP_CONCURRENCY, 1),
        slow_after=settings.HEALTH_SWEEP_SLOW_AFTER_SECONDS,
    )
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweep-writer")
    writes: list[Future] = []
    report = SweepReport()
    # Finished probes arrive on a queue from the prober's loop thread.
    results: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
    # The claim lease outlives any probe and the per-destination queue, so nobody
    # re-claims a service while it waits or is probed.
    lease = timedelta(seconds=300)
    max_queued = max_queued or settings.HEALTH_SWEEP_MAX_QUEUED
    write_batch = 1000
    pending_ids = list(service_ids) if service_ids is not None else None
    state = {"outstanding": 0, "longest": 0.0, "last_result": time.monotonic(),
             "last_flush": time.monotonic(), "ready": []}

    def write(outcomes: list[Outcome]) -> None:
        rows, deferred = [], []
        for outcome in outcomes:
            if outcome.deferred:
                deferred.append(outcome.plan.service.pk)
                continue
            # Lines written while judging a probe (breaker, alerts) name the service.
            with log_context(service=outcome.plan.service.name):
                try:
                    rows.append(_row_for(outcome))
                except Exception:  # noqa: BLE001 - one bad row must not lose the batch
                    logger.exception("health: could not evaluate service %s", outcome.plan.service.pk)
        report.changes += _write(rows)
        if deferred:
            # Not probed (destination saturated): due again soon, status untouched.
            later = timezone.now() + timedelta(seconds=settings.HEALTH_MIN_INTERVAL_SECONDS)
            Service.objects.filter(pk__in=deferred).update(next_check_at=later)
        report.deferred += len(deferred)
        for outcome in outcomes:
            if outcome.plan.withheld:
                report.withheld += 1
            elif not outcome.deferred:
                report.probed += 1
                report.trials += bool(outcome.plan.permit and outcome.plan.permit.trial)
        for r in rows:
            report.verdicts[r.verdict] = report.verdicts.get(r.verdict, 0) + 1
        if keep_rows:
            report.rows.extend(rows)

    def flush() -> None:
        if state["ready"]:
            writes.append(writer.submit(write, state["ready"]))
        state["ready"], state["last_flush"] = [], time.monotonic()

    def collect_once() -> None:
        """Take what came back (waiting up to 0.2 s); hand a batch to the writer when due."""
        try:
            got = [results.get(timeout=0.2)]
        except queue.Empty:
            got = []
        while True:
            try:
                got.append(results.get_nowait())
            except queue.Empty:
                break
        state["outstanding"] -= len(got)
        now = time.monotonic()
        if got:
            state["last_result"] = now
        elif now - state["last_result"] > state["longest"] + PROBER_STALL_MARGIN_SECONDS:
            flush()  # what did come back is kept
            raise RuntimeError(
                f"health sweep: no probe result for {now - state['last_result']:.0f} s with "
                f"{state['outstanding']} probe(s) out (longest timeout {state['longest']:g} s): "
                "the prober stalled"
            )
        state["ready"].extend(got)
        if len(state["ready"]) >= write_batch or now - state["last_flush"] > 1.0:
            flush()

    def finish() -> None:
        flush()
        try:
            for fut in writes:
                fut.result()  # re-raise a failed write here
        finally:
            writer.submit(connections.close_all).result()  # the writer's own connection
            writer.shutdown(wait=True)

    def drain_in_background() -> None:
        try:
            while state["outstanding"] > 0:
                collect_once()
            finish()
        except Exception:  # noqa: BLE001 - a background thread: log, the leases expire
            logger.exception("health: writing the detached results of a sweep failed")

    exhausted = False
    detached = False
    dispatched_at: float | None = None
    try:
        while True:
            # Claim while the prober has room: each batch is sent as soon as it is
            # claimed, so probing starts after the first claim, not the last.
            while not exhausted and state["outstanding"] < max_queued:
                if pending_ids is not None:
                    chunk, pending_ids = pending_ids[:batch_size], pending_ids[batch_size:]
                    batch = _claim(now=timezone.now(), batch_size=batch_size, service_ids=chunk, lease=lease)
                    exhausted = not pending_ids
                else:
                    batch = _claim(now=timezone.now(), batch_size=batch_size, service_ids=None, lease=lease)
                    exhausted = len(batch) < batch_size
                report.claimed += len(batch)
                send = []
                for plan in _plan(batch, force=force):
                    if plan.withheld:
                        state["ready"].append(Outcome(plan=plan, checked_at=timezone.now()))
                    else:
                        send.append(plan)
                if send:
                    state["longest"] = max(state["longest"], *(_timeout_of(p.service) for p in send))
                    _probe_submit(send, results, gate)
                    state["outstanding"] += len(send)
            if not state["outstanding"]:
                if exhausted:
                    break
                continue
            if exhausted and detach_after is not None:
                dispatched_at = dispatched_at or time.monotonic()
                if time.monotonic() - dispatched_at > detach_after:
                    flush()
                    logger.info("health: %d slow probe(s) left to a background writer",
                                state["outstanding"])
                    threading.Thread(target=drain_in_background, name="sweep-drain", daemon=True).start()
                    detached = True
                    break
            collect_once()
    finally:
        if not detached:
            finish()
    report.seconds = time.perf_counter() - started
    return report


# --- TTL services and deregistration ----------------------------------------------------------


def health_ttl_expire(*, now: datetime | None = None) -> int:
    """Turn critical every TTL service whose last heartbeat is older than its TTL."""
    now = now or timezone.now()
    deadline = ExpressionWrapper(
        Coalesce("last_heartbeat_at", "registered_at")
        + ExpressionWrapper(F("ttl_seconds") * Value(timedelta(seconds=1)), output_field=DurationField()),
        output_field=DateTimeField(),
    )
    expired = 0
    with transaction.atomic():
        candidates = (
            Service.objects.filter(ttl_seconds__isnull=False)
            .exclude(status__in=[HealthStatus.CRITICAL, HealthStatus.MAINTENANCE])
        )
        if connection.vendor == "postgresql":
            services = list(candidates.alias(deadline=deadline).filter(deadline__lt=now)
                            .select_for_update(skip_locked=True, no_key=True))
        else:
            # SQLite (the demo's embedded default) cannot multiply an integer by an interval.
            services = [
                svc for svc in candidates
                if (svc.last_heartbeat_at or svc.registered_at) + timedelta(seconds=svc.ttl_seconds) < now
            ]
        for svc in services:
            seen = svc.last_heartbeat_at or svc.registered_at
            reason = f"TTL expired: no heartbeat for {int((now - seen).total_seconds())} s (TTL {svc.ttl_seconds} s)"
            old = svc.status
            svc.status, svc.status_reason, svc.status_changed_at = HealthStatus.CRITICAL, reason, now
            svc.critical_since, svc.last_checked_at = now, now
            svc.save(update_fields=["status", "status_reason", "status_changed_at", "critical_since",
                                    "last_checked_at"])
            HealthSnapshot.objects.create(service=svc, checked_at=now, status=HealthStatus.CRITICAL,
                                          error=reason, details={"ttl": True})
            StatusChange.objects.create(service=svc, service_name=svc.name, service_type=svc.type,
                                        old_status=old, new_status=HealthStatus.CRITICAL, reason=reason, at=now)
            _alert_for_change(svc, old, HealthStatus.CRITICAL, reason)
            expired += 1
    for svc in services:  # after commit: the breaker lives in Redis
        breaker_for(svc).force_open(reason=f"{HEALTH_TRIP_PREFIX}: {svc.status_reason}")
    return expired


def health_deregister_expired(*, now: datetime | None = None) -> int:
    """Delete services critical for longer than their ``deregister_after_seconds``; record it."""
    now = now or timezone.now()
    limit = ExpressionWrapper(
        F("critical_since")
        + ExpressionWrapper(F("deregister_after_seconds") * Value(timedelta(seconds=1)),
                            output_field=DurationField()),
        output_field=DateTimeField(),
    )
    gone: list[int] = []
    with transaction.atomic():
        candidates = Service.objects.filter(
            status=HealthStatus.CRITICAL, deregister_after_seconds__isnull=False, critical_since__isnull=False,
        )
        if connection.vendor == "postgresql":
            services = list(candidates.alias(limit=limit).filter(limit__lte=now)
                            .select_for_update(skip_locked=True))
        else:
            # SQLite (the demo's embedded default) cannot multiply an integer by an interval.
            services = [
                svc for svc in candidates
                if svc.critical_since + timedelta(seconds=svc.deregister_after_seconds) <= now
            ]
        for svc in services:
            critical_for = int((now - svc.critical_since).total_seconds())
            StatusChange.objects.create(
                service=svc, service_name=svc.name, service_type=svc.type, old_status=svc.status,
                new_status=StatusChange.DEREGISTERED, at=now,
                reason=f"deregistered: critical for {critical_for} s "
                       f"(deregister after {svc.deregister_after_seconds} s)",
            )
            gone.append(svc.pk)
            svc.delete()  # StatusChange/BreakerEvent keep the name (FK set to NULL)
    for pk in gone:
        breaker_forget(service_id=pk)
    if gone:
        logger.info("health: deregistered %d service(s): %s", len(gone), gone)
    return len(gone)


# --- Entry points ------------------------------------------------------------------------------


def health_sweep(*, keep_rows: bool = False) -> SweepReport:
    """One sweep under the global lock; a no-op report if another sweep holds it."""
    token = uuid.uuid4().hex
    if not cache.add(SWEEP_LOCK_KEY, token, timeout=settings.HEALTH_SWEEP_LOCK_SECONDS):
        logger.info("health: another sweep is running; skipping")
        return SweepReport(skipped_locked=True)
    try:
        ttl_expired = health_ttl_expire()
        # Slow probes are left to a background writer: the lock is never held waiting for them.
        report = health_sweep_run(keep_rows=keep_rows, detach_after=settings.HEALTH_SWEEP_WAIT_SECONDS)
        report.ttl_expired = ttl_expired
        report.deregistered = health_deregister_expired()
        return report
    finally:
        if cache.get(SWEEP_LOCK_KEY) == token:
            cache.delete(SWEEP_LOCK_KEY)


def health_check_now(*, service_ids: list[int] | None = None, keep_rows: bool = True) -> SweepReport:
    """The operator's "check now": probe these services (or all) at once, even through an
    open breaker (the probe is then the half-open trial)."""
    if service_ids is None:
        service_ids = list(Service.objects.filter(_probed()).values_list("id", flat=True))
    report = health_sweep_run(service_ids=service_ids, force=True, keep_rows=keep_rows)
    report.ttl_expired = health_ttl_expire()
    return report


def health_oldest_overdue_seconds(*, now: datetime | None = None) -> float:
    """How late the most overdue check is (0 when none is): the sweep's own health.

    Overdue = last probe (or registration) + interval is past. A service whose probe is
    queued, deferred or hanging keeps getting older here, so a frozen sweep shows.
    """
    now = now or timezone.now()
    seen = Coalesce("last_checked_at", "registered_at")
    probed = Service.objects.filter(_probed())
    if connection.vendor == "postgresql":
        due = ExpressionWrapper(
            seen + ExpressionWrapper(F("check_interval_seconds") * Value(timedelta(seconds=1)),
                                     output_field=DurationField()),
            output_field=DateTimeField(),
        )
        oldest = probed.annotate(due=due).order_by("due").values_list("due", flat=True).first()
    else:  # SQLite (the demo's default) cannot multiply an integer by an interval
        rows = probed.values_list("last_checked_at", "registered_at", "check_interval_seconds")
        dues = [(c or r) + timedelta(seconds=i) for c, r, i in rows if (c or r)]
        oldest = min(dues, default=None)
    if oldest is None:
        return 0.0
    return max(0.0, (now - oldest).total_seconds())


def health_snapshots_prune(*, now: datetime | None = None, batch_size: int | None = None) -> int:
    """Delete snapshots older than HEALTH_SNAPSHOT_RETENTION_DAYS, in batches (short locks)."""
    from berrys_portal.retention import rows_prune

    cutoff = (now or timezone.now()) - timedelta(days=settings.HEALTH_SNAPSHOT_RETENTION_DAYS)
    return rows_prune(queryset=HealthSnapshot.objects.all(), age_field="checked_at", cutoff=cutoff,
                      batch_size=batch_size or settings.HEALTH_PRUNE_BATCH_SIZE)


# --- Uptime (admin) ------------------------------------------------------------------------------

UP_STATUSES = frozenset({HealthStatus.PASSING, HealthStatus.WARNING})
DOWN_STATUSES = frozenset({HealthStatus.CRITICAL})


def service_uptime(*, service: Service, window: timedelta, now: datetime | None = None) -> float | None:
    """Share of ``window`` the service was up (passing/warning) vs down (critical), from StatusChange.

    Time in unknown or maintenance counts neither way. None when nothing is known.
    """
    now = now or timezone.now()
    start = now - window
    before = (
        StatusChange.objects.filter(service=service, at__lte=start).order_by("-at")
        .values_list("new_status", flat=True).first()
    )
    changes = list(
        StatusChange.objects.filter(service=service, at__gt=start, at__lte=now).order_by("at")
        .values_list("at", "new_status")
    )
    status, since = (before or HealthStatus.UNKNOWN), max(start, service.registered_at or start)
    up = down = 0.0
    for at, new_status in [*changes, (now, None)]:
        span = max(0.0, (at - since).total_seconds())
        if status in UP_STATUSES:
            up += span
        elif status in DOWN_STATUSES:
            down += span
        status, since = new_status, max(since, at)
    return None if up + down == 0 else up / (up + down)
