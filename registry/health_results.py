"""Health results: what a probe saw (``Outcome``), its evaluation into a service's new
state (``Row``), and writing a group of them in one short transaction.

``outcomes_write`` is what the sweep's writer thread runs for each group: evaluate every
outcome (the verdict rules of ``registry.health_rules``), then ``rows_write``: the guarded
service UPDATE, the snapshots and the ``StatusChange`` rows (``StatusChange.record``) in one
transaction (their alerts follow from the rows: the outbox); then, for the rows that UPDATE
wrote, the breaker through ``registry.health_effects``, so a breaker never follows a verdict
the registry skipped.

PostgreSQL-specific statements, kept because ``bench/health.py --only W`` shows they earn
their place (10,000 services in groups of 1,000, medians of 3, same run, load average
10.5 on 2 shared cores, 2026-12-01); SQLite (the demo's default) takes the ORM twin:

- ``_update_services_unnest``: one ``UPDATE … FROM unnest(…)`` per group, 1.72 s, against
  one guarded ORM ``update`` per service 14.6 s (8.5×) and lock + ``bulk_update`` 97 s (45×);
- ``_insert_snapshots_copy``: ``COPY … FROM STDIN``, 0.53 s, against ``bulk_create`` 1.81 s (3.4×).

``SET LOCAL synchronous_commit TO OFF`` was dropped: whole group writes with it 3.76 s,
without it 3.50 s (0.93×, within the noise): it did not earn its place.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from berrys_portal import metrics
from berrys_portal.json_input import json_loads_bounded
from berrys_portal.logging import log_context
from registry import egress, prober
from registry import health_effects as effects
from registry.discovery import recent_instances
from registry.health_effects import Plan
from registry.health_rules import (
    interval_of,
    probe_verdict,
    redirect_host,
    storable,
    timeout_of,
    transition,
)
from registry.models import HealthSnapshot, HealthStatus, Service, StatusChange, StatusFlip

logger = logging.getLogger(__name__)

# StatusChange.actor of the transitions the sweep makes.
SWEEP_ACTOR = "health-sweep"


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


def outcome_of(plan: Plan, response: prober.Response | None, error: BaseException | None, seconds: float) -> Outcome:
    """What one probe saw, in the sweep's terms (runs on the prober's loop thread)."""
    svc = plan.service
    outcome = Outcome(plan=plan, checked_at=timezone.now() - timedelta(seconds=seconds), latency_ms=seconds * 1000)
    if response is not None:
        outcome.http_status = response.status
        if 300 <= response.status < 400:
            # Never followed: the answer is the redirect, and it fails the check.
            outcome.error = f"redirected to {redirect_host(response.location or '')}"
            outcome.detail = f"HTTP {response.status} Location: {(response.location or '')[:300]}"
        elif response.body:
            try:
                outcome.body = storable(json_loads_bounded(response.body))
            except ValueError:  # not JSON, too deep, or cut at the size cap: the status decides
                outcome.body = None
        return outcome
    outcome.detail = f"{type(error).__name__}: {error}"[:500]
    if isinstance(error, prober.ProbeDeferred):
        outcome.deferred, outcome.latency_ms = True, None
    elif isinstance(error, prober.ProbeTimeout):
        outcome.error = f"timed out after {timeout_of(svc):g} s"
    elif isinstance(error, egress.EgressDenied | egress.EgressLookupError):
        outcome.latency_ms, outcome.error = None, error.category
    elif isinstance(error, prober.ProbeConnectionError | prober.ProbeProtocolError):
        outcome.error = error.category
    elif isinstance(error, ValueError):
        outcome.latency_ms, outcome.error = None, "bad health URL"
    else:
        outcome.latency_ms, outcome.error = None, "probe error"
    return outcome


# --- Evaluation and writes ------------------------------------------------------------


@dataclass(slots=True)
class SnapshotValues:
    """A ``HealthSnapshot`` row's values, as the group write COPYs them (no model instance:
    building 10,000 ``HealthSnapshot`` instances took ~0.3 s of each scenario B sweep's GIL)."""

    checked_at: datetime
    status: str
    http_status: int | None = None
    latency_ms: float | None = None
    error: str = ""
    details: dict = field(default_factory=dict)


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
    snapshot: SnapshotValues | None
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


def row_for(outcome: Outcome) -> Row:
    """Judge one outcome: the service's new state (and its breaker told, via health_effects)."""
    plan, svc = outcome.plan, outcome.plan.service
    interval = interval_of(svc)
    if plan.withheld:
        # Not sent: keep it critical until the breaker lets a trial through,
        # and come back as soon as the reset timeout has passed.
        next_at = effects.next_after_withheld(plan, checked_at=outcome.checked_at, interval=interval)
        snapshot = SnapshotValues(checked_at=outcome.checked_at, status=HealthStatus.CRITICAL,
                                  error=plan.withheld, details={"withheld": True})
        return Row(svc, svc.status, HealthStatus.CRITICAL, plan.withheld, svc.consecutive_failures,
                   0, outcome.checked_at, next_at, None, snapshot, HealthStatus.CRITICAL)

    verdict, reason, details = probe_verdict(
        http_status=outcome.http_status, body=outcome.body, latency_ms=outcome.latency_ms,
        slow_threshold_ms=svc.slow_threshold_ms, error=outcome.error,
    )
    if outcome.latency_ms is not None:
        metrics.observe_probe(service=svc.name, service_type=svc.type,
                              latency_seconds=outcome.latency_ms / 1000, outcome=verdict)
    if plan.trial:
        details["breaker_trial"] = True
    status, reason, fails, successes = transition(svc, verdict, reason, trial=plan.trial)
    next_at = outcome.checked_at + interval
    if status == HealthStatus.CRITICAL:
        next_at = effects.next_after_critical(plan, checked_at=outcome.checked_at, interval=interval)
    snapshot = SnapshotValues(
        checked_at=outcome.checked_at, status=verdict, http_status=outcome.http_status,
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
    changed_at = Service.flip_changed_at(old=row.old_status, new=row.status, at=row.checked_at,
                                         previous=svc.status_changed_at)
    if row.status == HealthStatus.CRITICAL:
        critical_since = svc.critical_since if (svc.critical_since and not changed) else row.checked_at
    else:
        critical_since = None
    return (svc.pk, row.old_status, row.status, row.reason, changed_at, row.checked_at, row.next_at,
            row.fails, row.successes, critical_since, row.latency_ms)


_SERVICE_FIELDS = ("status", "status_reason", "status_changed_at", "last_checked_at", "next_check_at",
                   "consecutive_failures", "consecutive_successes", "critical_since", "last_latency_ms")


def _update_services(rows: list[Row]) -> set[int]:
    """Write the rows' new state; returns the ids actually updated (status unchanged meanwhile)."""
    if connection.vendor == "postgresql":
        return _update_services_unnest(rows)
    return _update_services_orm(rows)


def _update_services_unnest(rows: list[Row]) -> set[int]:
    """One statement, eleven array parameters (not eleven placeholders per row)."""
    columns = [list(col) for col in zip(*(_fields(row) for row in rows), strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(_UPDATE_SQL, columns)
        return {r[0] for r in cursor.fetchall()}


def _update_services_orm(rows: list[Row]) -> set[int]:
    """The ORM's twin: one guarded ``update`` per service (``filter(pk, status=old)``)."""
    updated: set[int] = set()
    for row in rows:
        (pk, old, *values) = _fields(row)
        if Service.objects.filter(pk=pk, status=old).update(**dict(zip(_SERVICE_FIELDS, values, strict=True))):
            updated.add(pk)
    return updated


_SNAPSHOT_COLUMNS = ["service_id", "checked_at", "status", "http_status", "latency_ms", "error", "details"]


def _insert_snapshots(values: list[tuple]) -> None:
    if not values:
        return
    if connection.vendor == "postgresql":
        _insert_snapshots_copy(values)
    else:
        _insert_snapshots_orm(values)


def _insert_snapshots_copy(values: list[tuple]) -> None:
    table = HealthSnapshot._meta.db_table
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {table} ({', '.join(_SNAPSHOT_COLUMNS)}) FROM STDIN") as copy:
            for row in values:
                copy.write_row([json.dumps(v) if isinstance(v, dict | list) else v for v in row])


def _insert_snapshots_orm(values: list[tuple]) -> None:
    # The model constructor takes a foreign key's column name (``service_id``) with a raw
    # id; stripping ``_id`` would hand an int to the relation and raise ValueError.
    HealthSnapshot.objects.bulk_create(
        [HealthSnapshot(**dict(zip(_SNAPSHOT_COLUMNS, row, strict=True))) for row in values]
    )


def rows_write(rows: list[Row]) -> tuple[int, set[int]]:
    """Persist one group of results in one short transaction.

    Returns the number of status changes written and the ids of the services whose row the
    guarded UPDATE wrote (a service whose status changed meanwhile, e.g. put in maintenance
    by an operator, is skipped).
    """
    if not rows:
        return 0, set()
    changes: list[Row] = []
    with transaction.atomic():
        updated = _update_services(rows)
        _insert_snapshots(
            [(r.service.pk, s.checked_at, s.status, s.http_status, s.latency_ms, s.error, s.details)
             for r in rows if (s := r.snapshot) is not None and r.service.pk in updated],
        )
        changes = [r for r in rows if r.service.pk in updated and r.status != r.old_status]
        # The set-based UPDATE above applied Service.flip's rule to many rows; their
        # transitions are written by the same one writer, in one statement.
        StatusChange.record(
            StatusFlip(service_id=r.service.pk, service_name=r.service.name, service_type=r.service.type,
                       old=r.old_status, new=r.status, reason=r.reason, at=r.checked_at, actor=SWEEP_ACTOR)
            for r in changes
        )
        # Their alerts follow from the rows: the outbox task, enqueued when this commits.
    if changes:
        recent_instances.forget()  # bulk SQL sends no post_save: this process's client must not lag
    return len(changes), updated


def outcomes_write(outcomes: list[Outcome], report: SweepReport, *, keep_rows: bool) -> None:
    """Evaluate and write one group of finished probes; count them in ``report``."""
    rows, deferred = [], []
    plans = {}
    for outcome in outcomes:
        if outcome.deferred:
            deferred.append(outcome.plan.service.pk)
            continue
        # Lines written while judging a probe name the service.
        with log_context(service=outcome.plan.service.name):
            try:
                rows.append(row_for(outcome))
                plans[outcome.plan.service.pk] = outcome.plan
            except Exception:  # noqa: BLE001 - one bad row must not lose the batch
                logger.exception("health: could not evaluate service %s", outcome.plan.service.pk)
    changes, updated = rows_write(rows)
    report.changes += changes
    # The breakers follow the status the guarded UPDATE wrote, never one it skipped, so the
    # two cannot disagree; their transitions are held and written as one statement.
    with effects.breaker_events_held() as events:
        for row in rows:  # a withheld probe's plan holds no permit: its breaker is not told
            if row.service.pk in updated:
                with log_context(service=row.service.name):
                    effects.breaker_after_probe(plans[row.service.pk], status=row.status,
                                                verdict=row.verdict, reason=row.reason)
    effects.breaker_events_write(events)
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
            report.trials += bool(outcome.plan.trial)
    for r in rows:
        report.verdicts[r.verdict] = report.verdicts.get(r.verdict, 0) + 1
    if keep_rows:
        report.rows.extend(rows)
