"""Health expiry and pruning: TTL services, deregistration of long-critical services,
the age of the most overdue check, and the pruning of old snapshots.

"A timestamp plus a number of seconds held in another column" is one ORM expression,
``SecondsAfter``, so each question is one query on both databases (it used to be SQL
arithmetic on PostgreSQL and a Python loop over every candidate row on SQLite). Like
Django's own database functions, the expression has a spelling per database: PostgreSQL
multiplies an interval, SQLite (which has no interval type; Django stores its datetimes as
ISO text) uses ``strftime`` with a seconds modifier, to the millisecond.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, F, Func
from django.db.models.functions import Coalesce
from django.utils import timezone

from registry import health_effects as effects
from registry.health_loop import probed as probed_filter
from registry.models import HealthSnapshot, HealthStatus, Service, StatusChange

logger = logging.getLogger(__name__)

# StatusChange.actor of the transitions this module makes.
TTL_ACTOR = "health-ttl"
DEREGISTER_ACTOR = "health-deregister"


class SecondsAfter(Func):
    """``when + seconds`` (an integer expression) as a datetime, in SQL on both databases."""

    output_field = DateTimeField()

    def __init__(self, when, seconds) -> None:
        super().__init__(when, seconds)

    def _parts(self, compiler) -> tuple[str, str, list]:
        when, when_params = compiler.compile(self.source_expressions[0])
        seconds, seconds_params = compiler.compile(self.source_expressions[1])
        return when, seconds, [*when_params, *seconds_params]

    def as_postgresql(self, compiler, connection, **extra):
        when, seconds, params = self._parts(compiler)
        return f"({when} + ({seconds}) * INTERVAL '1 second')", params

    def as_sqlite(self, compiler, connection, **extra):
        when, seconds, params = self._parts(compiler)
        # The format Django stores (and compares) SQLite datetimes in; %% is Django's escape.
        return f"STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', {when}, ({seconds}) || ' seconds')", params

    def as_sql(self, compiler, connection, **extra):
        raise NotImplementedError(f"SecondsAfter has no spelling for {connection.vendor}")


def health_ttl_expire(*, now: datetime | None = None) -> int:
    """Turn critical every TTL service whose last heartbeat is older than its TTL."""
    now = now or timezone.now()
    deadline = SecondsAfter(Coalesce("last_heartbeat_at", "registered_at"), F("ttl_seconds"))
    expired = 0
    with transaction.atomic():
        services = list(
            Service.objects.filter(ttl_seconds__isnull=False)
            .exclude(status__in=[HealthStatus.CRITICAL, HealthStatus.MAINTENANCE])
            .alias(deadline=deadline).filter(deadline__lt=now)
            .select_for_update(skip_locked=True, no_key=True)
        )
        for svc in services:
            seen = svc.last_heartbeat_at or svc.registered_at
            reason = f"TTL expired: no heartbeat for {int((now - seen).total_seconds())} s (TTL {svc.ttl_seconds} s)"
            fields = svc.flip(HealthStatus.CRITICAL, reason=reason, at=now, actor=TTL_ACTOR)
            svc.critical_since, svc.last_checked_at = now, now
            svc.save(update_fields=[*fields, "critical_since", "last_checked_at"])
            HealthSnapshot.objects.create(service=svc, checked_at=now, status=HealthStatus.CRITICAL,
                                          error=reason, details={"ttl": True})
            expired += 1
    effects.breakers_open_expired(services)  # after commit: the breaker lives in Redis
    return expired


def health_deregister_expired(*, now: datetime | None = None) -> int:
    """Delete services critical for longer than their ``deregister_after_seconds``; record it."""
    now = now or timezone.now()
    limit = SecondsAfter(F("critical_since"), F("deregister_after_seconds"))
    gone: list[int] = []
    with transaction.atomic():
        services = list(
            Service.objects.filter(status=HealthStatus.CRITICAL, deregister_after_seconds__isnull=False,
                                   critical_since__isnull=False)
            .alias(limit=limit).filter(limit__lte=now)
            .select_for_update(skip_locked=True)
        )
        for svc in services:
            critical_for = int((now - svc.critical_since).total_seconds())
            # The epitaph goes through the same rule; the row is deleted, not saved.
            svc.flip(StatusChange.DEREGISTERED, at=now, actor=DEREGISTER_ACTOR,
                     reason=f"deregistered: critical for {critical_for} s "
                            f"(deregister after {svc.deregister_after_seconds} s)")
            gone.append(svc.pk)
            svc.delete()  # StatusChange/BreakerEvent keep the name (FK set to NULL)
    effects.breakers_forget(gone)
    if gone:
        logger.info("health: deregistered %d service(s): %s", len(gone), gone)
    return len(gone)


def health_oldest_overdue_seconds(*, now: datetime | None = None) -> float:
    """How late the most overdue check is (0 when none is): the sweep's own health.

    Overdue = last probe (or registration) + interval is past. A service whose probe is
    queued, deferred or hanging keeps getting older here, so a frozen sweep shows.
    """
    now = now or timezone.now()
    due = SecondsAfter(Coalesce("last_checked_at", "registered_at"), F("check_interval_seconds"))
    oldest = (Service.objects.filter(probed_filter()).annotate(due=due).filter(due__isnull=False)
              .order_by("due").values_list("due", flat=True).first())
    if oldest is None:
        return 0.0
    return max(0.0, (now - oldest).total_seconds())


def health_snapshots_prune(*, now: datetime | None = None, batch_size: int | None = None) -> int:
    """Delete snapshots older than HEALTH_SNAPSHOT_RETENTION_DAYS, in batches (short locks)."""
    from berrys_portal.retention import rows_prune

    cutoff = (now or timezone.now()) - timedelta(days=settings.HEALTH_SNAPSHOT_RETENTION_DAYS)
    return rows_prune(queryset=HealthSnapshot.objects.all(), age_field="checked_at", cutoff=cutoff,
                      batch_size=batch_size or settings.HEALTH_PRUNE_BATCH_SIZE)
