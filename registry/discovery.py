"""Service discovery: pick an eligible instance of a type, rotating between them.

Eligible: passing, then warning; unknown (never checked) only when no checked
healthy instance exists; never critical or in maintenance, never an instance
waiting for an operator's approval (``Service.pending_approval``). The
ServiceClient picks through the same functions, so it follows the same rules.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

from django.db import connections, router
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from berrys_portal.errors import NoEligibleServiceError, ServiceNotFoundError
from registry.models import DISCOVERY_RANK, HealthStatus, Service

logger = logging.getLogger(__name__)

_counters: dict[str, itertools.count] = {}
MAX_STATES_LISTED = 20


class _InstancesQuery:
    """``Service.objects.filter(type=?).order_by("id")``, compiled once per database.

    Discovery runs on every ServiceClient call (every workflow step). Compiling the
    ORM query costs more than running it (~0.4 of ~0.65 ms here), so the SQL and the
    column converters are built once by the ORM itself and reused; rows become
    model instances the way the ORM makes them (``from_db``).
    """

    def __init__(self) -> None:
        self._compiled: dict[str, tuple[str, Any, dict, list[str]]] = {}

    def _compile(self, alias: str) -> tuple[str, Any, dict, list[str]]:
        compiled = self._compiled.get(alias)
        if compiled is None:
            query = Service.objects.using(alias).filter(type="").order_by("id").query
            compiler = query.get_compiler(alias)
            sql, _ = compiler.as_sql()
            columns = [col for col, _, _ in compiler.select]
            names = [col.target.attname for col in columns]
            compiled = self._compiled[alias] = (sql, compiler, compiler.get_converters(columns), names)
        return compiled

    def __call__(self, service_type: str) -> list[Service]:
        alias = router.db_for_read(Service)
        sql, compiler, converters, names = self._compile(alias)
        with connections[alias].cursor() as cursor:
            cursor.execute(sql, [service_type])
            rows = cursor.fetchall()
        if converters:
            rows = compiler.apply_converters(rows, converters)
        return [Service.from_db(alias, names, row) for row in rows]


_instances_of = _InstancesQuery()


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
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, list[Service]]] = {}

    def get(self, service_type: str, max_age: float) -> list[Service]:
        now = time.monotonic()
        entry = self._entries.get(service_type)
        if entry is not None and now - entry[0] < max_age:
            return entry[1]
        instances = _instances_of(service_type)
        self._entries[service_type] = (now, instances)
        return instances

    def forget(self, service_type: str | None = None) -> None:
        if service_type is None:
            self._entries.clear()
        else:
            self._entries.pop(service_type, None)


recent_instances = _RecentInstances()


@receiver([post_save, post_delete], sender=Service)
def _service_changed(sender, instance: Service, **kwargs) -> None:
    recent_instances.forget()  # the type may have changed too: forget them all (cheap)


def service_eligible_list(*, service_type: str, max_age: float = 0.0) -> list[Service]:
    """Every eligible instance, best tier first; raises if there is none.

    ``max_age`` > 0 accepts a view of the registry up to that many seconds old
    (the ServiceClient's; see ``_RecentInstances``).
    """
    instances = recent_instances.get(service_type, max_age) if max_age > 0 else _instances_of(service_type)
    if not instances:
        raise ServiceNotFoundError(f"No service of type {service_type} found")
    by_status: dict[str, list[Service]] = {}
    for inst in instances:
        # Pending approval counts as registered (a 503 naming it, not a 404) but never eligible.
        by_status.setdefault("pending approval" if inst.pending_approval else inst.status, []).append(inst)
    healthy = by_status.get(HealthStatus.PASSING, []) + by_status.get(HealthStatus.WARNING, [])
    eligible = healthy or by_status.get(HealthStatus.UNKNOWN, [])
    if not eligible:
        states = ", ".join(f"{inst.name}: {'pending approval' if inst.pending_approval else inst.status}"
                           for inst in instances[:MAX_STATES_LISTED])
        if len(instances) > MAX_STATES_LISTED:
            states += f", and {len(instances) - MAX_STATES_LISTED} more"
        raise NoEligibleServiceError(
            f"{len(instances)} instance(s) of type {service_type} registered but none is eligible "
            f"({states})"
        )
    return eligible


def _next_index(service_type: str) -> int:
    """A per-process round-robin counter.

    Process-local on purpose: discovery is the hot path, and a shared counter in
    Redis costs a network round trip per call. Each worker process rotates through
    the instances on its own, which spreads load just as evenly.
    """
    counter = _counters.get(service_type)
    if counter is None:
        counter = _counters.setdefault(service_type, itertools.count())
    return next(counter)  # itertools.count is atomic under the GIL


def service_candidates(*, service_type: str, max_age: float = 0.0) -> list[Service]:
    """Every eligible instance, the rotated pick first, then the rest (for failover).

    One query (none with ``max_age`` and a recent view). The pick rotates within the
    best tier (passing over warning), so a degraded instance takes traffic only when
    no passing one exists.
    """
    eligible = service_eligible_list(service_type=service_type, max_age=max_age)
    best_status = min(eligible, key=lambda s: DISCOVERY_RANK[s.status]).status
    tier = [s for s in eligible if s.status == best_status]
    first = tier[_next_index(service_type) % len(tier)]
    return [first, *(s for s in eligible if s.pk != first.pk)]


def service_pick(*, service_type: str) -> Service:
    """One eligible instance of ``service_type``, rotating within the best tier."""
    return service_candidates(service_type=service_type)[0]
