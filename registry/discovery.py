"""Service discovery: pick an eligible instance of a type, rotating between them.

Eligible: passing, then warning; unknown (never checked) only when no checked
healthy instance exists; never critical or in maintenance.
"""

from __future__ import annotations

import itertools
import logging

from berrys_portal.errors import NoEligibleServiceError, ServiceNotFoundError
from registry.models import DISCOVERY_RANK, HealthStatus, Service

logger = logging.getLogger(__name__)

_counters: dict[str, itertools.count] = {}
MAX_STATES_LISTED = 20


def service_eligible_list(*, service_type: str) -> list[Service]:
    """Every eligible instance, best tier first; raises if there is none."""
    instances = list(Service.objects.filter(type=service_type).order_by("id"))
    if not instances:
        raise ServiceNotFoundError(f"No service of type {service_type} found")
    by_status: dict[str, list[Service]] = {}
    for inst in instances:
        by_status.setdefault(inst.status, []).append(inst)
    healthy = by_status.get(HealthStatus.PASSING, []) + by_status.get(HealthStatus.WARNING, [])
    eligible = healthy or by_status.get(HealthStatus.UNKNOWN, [])
    if not eligible:
        states = ", ".join(f"{inst.name}: {inst.status}" for inst in instances[:MAX_STATES_LISTED])
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


def service_candidates(*, service_type: str) -> list[Service]:
    """Every eligible instance, the rotated pick first, then the rest (for failover).

    One query. The pick rotates within the best tier (passing over warning), so a
    degraded instance takes traffic only when no passing one exists.
    """
    eligible = service_eligible_list(service_type=service_type)
    best_status = min(eligible, key=lambda s: DISCOVERY_RANK[s.status]).status
    tier = [s for s in eligible if s.status == best_status]
    first = tier[_next_index(service_type) % len(tier)]
    return [first, *(s for s in eligible if s.pk != first.pk)]


def service_pick(*, service_type: str) -> Service:
    """One eligible instance of ``service_type``, rotating within the best tier."""
    return service_candidates(service_type=service_type)[0]
