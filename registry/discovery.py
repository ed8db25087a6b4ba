"""Service discovery: pick an eligible instance of a type, rotating between them.

Eligible: passing, then warning; unknown (never checked) only when no checked
healthy instance exists; never critical or in maintenance, never an instance
waiting for an operator's approval (``Service.pending_approval``). The
ServiceClient picks through the same functions, so it follows the same rules.

PostgreSQL-specific code, kept because a figure shows it earns its place: the pick runs as
a prepared statement (``_fetch_prepared``). In the registry bench a discovery cost the
server (gunicorn worker + its PostgreSQL backend) 2.77–3.75 ms of CPU prepared against
4.35–4.74 ms for the same SQL planned on every request (the bench's ``discovery-plain``
scenario, same run, 100 to 100,000 services: docs/benchmarks.md, "At scale", run 4).
SQLite, and PostgreSQL with ``DISCOVERY_PREPARED_STATEMENT=0`` (behind a pooler in
transaction mode), run the same text through Django's cursor; both build the rows with
``registry.rows``.
"""

from __future__ import annotations

import itertools
import logging
import time

import psycopg
from django.conf import settings
from django.db import connections, router
from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from berrys_portal.errors import NoEligibleServiceError, ServiceNotFoundError
from registry.models import DISCOVERY_RANK, HealthStatus, Service
from registry.rows import services_from_rows

logger = logging.getLogger(__name__)

MAX_STATES_LISTED = 20
# Instances the ServiceClient gets per discovery, for failover past open breakers.
FAILOVER_CANDIDATES = 8

# The tiers, best first: (status, whether it counts only when no checked-healthy instance exists).
_TIERS = ((HealthStatus.PASSING, False), (HealthStatus.WARNING, False), (HealthStatus.UNKNOWN, True))


class _PickQuery:
    """Up to ``limit`` eligible instances of a type in rotation order, in one bounded query.

    Each branch of the ``UNION ALL`` is an index seek on ``registry_service_pick``
    (type, status, id; not pending approval) that reads at most ``limit`` rows: for each
    tier (passing, warning, unknown) the instances after the rotation cursor, then the
    wrap-around from the start. Unknown instances count only when no passing or warning
    one exists (a ``NOT EXISTS`` seek on the same index). So a pick costs the same with
    2 instances of a type or 2,000, and with 100 services or 100,000: at most seven
    ``limit``-row seeks (the seventh: any instance at all, telling 404 from 503), sorted,
    ``limit`` rows back. The SQL is built once per
    ``limit``; it is portable (PostgreSQL and SQLite run the same text), and spells the
    index's condition (``NOT "pending_approval"``) literally so both planners can use it.
    """

    def __init__(self) -> None:
        self._sql: dict[int, str] = {}

    def _build(self, limit: int) -> str:
        table = Service._meta.db_table
        cols = ", ".join(f'"{f.column}"' for f in Service._meta.concrete_fields)
        healthy = (f'SELECT 1 FROM "{table}" h WHERE h."type" = %s AND NOT h."pending_approval" '
                   "AND h.\"status\" IN ('passing', 'warning')")
        branches = []
        for rank, (status, only_if_none_healthy) in enumerate(_TIERS):
            extra = f" AND NOT EXISTS ({healthy})" if only_if_none_healthy else ""
            for part, cmp in ((0, ">"), (1, "<=")):
                branches.append(
                    f'SELECT * FROM (SELECT {2 * rank + part} AS "pick_rank", {cols} FROM "{table}" '
                    f'WHERE "type" = %s AND NOT "pending_approval" AND "status" = \'{status}\' '
                    f'AND "id" {cmp} %s{extra} ORDER BY "id" LIMIT {int(limit)}) t{rank}{part}'
                )
        # Any instance at all (rank 6, dropped from the answer): tells a 503 from a 404 without
        # a second query when nothing is eligible.
        branches.append(f'SELECT * FROM (SELECT 6 AS "pick_rank", {cols} FROM "{table}" WHERE "type" = %s '
                        'LIMIT 1) registered')
        union = " UNION ALL ".join(branches)
        return (f'SELECT "pick_rank", {cols} FROM ({union}) picks '
                f'ORDER BY "pick_rank", "id" LIMIT {int(limit)}')

    def params(self, service_type: str, cursor: int) -> list:
        params: list = []
        for _, only_if_none_healthy in _TIERS:
            for _ in range(2):
                params += [service_type, cursor]
                if only_if_none_healthy:
                    params.append(service_type)
        return [*params, service_type]

    def __call__(self, service_type: str, *, cursor: int, limit: int, prepared: bool | None = None) -> list[Service]:
        """The picks; raises the guide's 404 / 503 when there is none.

        ``prepared``: run it as a prepared statement (PostgreSQL; default
        ``DISCOVERY_PREPARED_STATEMENT``). The bench's ``discovery-plain`` scenario says False.
        """
        sql = self._sql.get(limit)
        if sql is None:
            sql = self._sql[limit] = self._build(limit)
        params = self.params(service_type, cursor)
        alias = router.db_for_read(Service)
        connection = connections[alias]
        if prepared is None:
            prepared = settings.DISCOVERY_PREPARED_STATEMENT
        if connection.vendor == "postgresql" and prepared:
            rows = _fetch_prepared(alias, sql, params)
        else:
            with connection.cursor() as raw:
                raw.execute(sql, params)
                rows = raw.fetchall()
        picks = [service for row, service in zip(rows, services_from_rows(alias, rows, skip=1), strict=True)
                 if row[0] < 6]
        if not picks:
            raise (service_none_eligible(service_type=service_type) if rows
                   else ServiceNotFoundError(f"No service of type {service_type} found"))
        return picks


def _fetch_prepared(alias: str, sql: str, params: list) -> list[tuple]:
    """Run the pick as a prepared statement on this connection (PostgreSQL); the raw rows.

    Planning the seven-branch query costs ~0.55 ms against ~0.2 ms to run it; prepared
    once per connection, later picks skip the planner. Django leaves psycopg's automatic
    preparation off (for poolers in transaction mode); this one statement asks for it
    (``DISCOVERY_PREPARED_STATEMENT=0`` turns it off behind such a pooler). The usual
    health check runs first, and query capture (tests, debug) records the statement.
    """
    conn = connections[alias]
    conn.close_if_health_check_failed()
    conn.ensure_connection()
    if conn.connection.prepare_threshold is None:
        # Django sets None ("never prepare"), which also ignores prepare=True. A threshold no
        # query reaches keeps automatic preparation off while this statement asks for it.
        conn.connection.prepare_threshold = 2**31 - 1
    raw = psycopg.Cursor(conn.connection)  # server-side binding: a plan can be reused
    try:
        with conn.wrap_database_errors:
            if conn.queries_logged:  # recorded like Django's own queries (tests, debug)
                with conn.make_debug_cursor(raw).debug_sql(sql, params):
                    raw.execute(sql, params, prepare=True)
            else:
                raw.execute(sql, params, prepare=True)
            return raw.fetchall()
    finally:
        raw.close()


_pick = _PickQuery()
# The rotation cursor: the id of the last instance this process picked, per type.
# Process-local on purpose (a shared one costs a round trip per pick); each worker
# process rotates through the best tier on its own, which spreads load as evenly.
_cursors: dict[str, int] = {}


def _instances_of(service_type: str) -> list[Service]:
    """The ServiceClient's candidates: up to FAILOVER_CANDIDATES, rotated (see ``_pick``)."""
    instances = _pick(service_type, cursor=_cursors.get(service_type, 0), limit=FAILOVER_CANDIDATES)
    _cursors[service_type] = instances[0].pk
    return instances


class _RecentInstances:
    """The ServiceClient's short-lived, process-local view of the registry.

    Like every client-side discovery cache (Consul agent caching, Eureka's client
    registry), it trades a bounded staleness for a query per call: with
    ``SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS`` = 1 (the default), a status change made by
    another process reaches this one's calls within a second. Safety does not depend
    on it: a service turning critical opens its breaker at once (shared in Redis, read
    on every call), and the client fails over past an open breaker. Changes made in
    this process (ORM saves, the health sweep's writes) forget the entry at once, and
    so does a failed call. ``0`` turns it off. The discovery API never uses it.

    An entry holds at most FAILOVER_CANDIDATES instances (one bounded query); calls
    within max_age rotate through its best tier, the next query continues after them.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, list[Service], itertools.count]] = {}

    def get(self, service_type: str, max_age: float) -> tuple[list[Service], int]:
        """The candidates and this call's turn (0 for a fresh query)."""
        now = time.monotonic()
        entry = self._entries.get(service_type)
        if entry is not None and now - entry[0] < max_age:
            return entry[1], next(entry[2])  # itertools.count is atomic under the GIL
        instances = _instances_of(service_type)
        turns = itertools.count(1)
        self._entries[service_type] = (now, instances, turns)
        return instances, 0

    def forget(self, service_type: str | None = None) -> None:
        if service_type is None:
            self._entries.clear()
        else:
            self._entries.pop(service_type, None)


recent_instances = _RecentInstances()


@receiver([post_save, post_delete], sender=Service)
def _service_changed(sender, instance: Service, **kwargs) -> None:
    recent_instances.forget()  # the type may have changed too: forget them all (cheap)


def service_none_eligible(*, service_type: str) -> Exception:
    """The guide's answer when no instance is eligible: 404 (none registered) or 503 naming states.

    Only on the failure path: a count and at most MAX_STATES_LISTED rows.
    """
    listed = list(Service.objects.filter(type=service_type).order_by("id")
                  .values_list("name", "status", "pending_approval")[:MAX_STATES_LISTED])
    if not listed:
        return ServiceNotFoundError(f"No service of type {service_type} found")
    total = len(listed)
    if total == MAX_STATES_LISTED:
        total = Service.objects.filter(type=service_type).count()
    states = ", ".join(f"{name}: {'pending approval' if pending else status}" for name, status, pending in listed)
    if total > MAX_STATES_LISTED:
        states += f", and {total - MAX_STATES_LISTED} more"
    return NoEligibleServiceError(
        f"{total} instance(s) of type {service_type} registered but none is eligible ({states})"
    )


def service_eligible_queryset(*, service_type: str) -> QuerySet[Service]:
    """Every eligible instance of a type, best tier first then by id (for paging ``?all=1``).

    Unknown instances only when no passing or warning one exists (one indexed seek).
    """
    base = Service.objects.filter(type=service_type, pending_approval=False)
    healthy = [HealthStatus.PASSING, HealthStatus.WARNING]
    statuses = healthy if base.filter(status__in=healthy).exists() else [HealthStatus.UNKNOWN]
    rank = Case(*(When(status=s, then=Value(DISCOVERY_RANK[s])) for s in statuses), output_field=IntegerField())
    return base.filter(status__in=statuses).alias(rank=rank).order_by("rank", "id")


def service_eligible_list(*, service_type: str, max_age: float = 0.0) -> list[Service]:
    """Every eligible instance, best tier first; raises if there is none.

    Reads every eligible instance of the type: for listing, not for picking (use
    ``service_pick``/``service_candidates``, whose cost does not grow with the type).
    ``max_age`` is accepted for compatibility and ignored.
    """
    eligible = list(service_eligible_queryset(service_type=service_type))
    if not eligible:
        raise service_none_eligible(service_type=service_type)
    return eligible


def service_candidates(*, service_type: str, max_age: float = 0.0) -> list[Service]:
    """Up to FAILOVER_CANDIDATES eligible instances, the rotated pick first (for failover).

    One bounded query (none with ``max_age`` and a recent view). The pick rotates
    within the best tier (passing over warning), so a degraded instance takes traffic
    only when no passing one exists.
    """
    if max_age > 0:
        instances, turn = recent_instances.get(service_type, max_age)
    else:
        instances, turn = _instances_of(service_type), 0
    if turn == 0:
        return instances
    tier = [s for s in instances if s.status == instances[0].status]
    first = tier[turn % len(tier)]
    return [first, *(s for s in instances if s.pk != first.pk)]


def service_pick(*, service_type: str, prepared: bool | None = None) -> Service:
    """One eligible instance of ``service_type``, rotating within the best tier: one row read."""
    picked = _pick(service_type, cursor=_cursors.get(service_type, 0), limit=1, prepared=prepared)
    _cursors[service_type] = picked[0].pk
    return picked[0]
