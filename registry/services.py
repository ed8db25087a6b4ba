"""Registry service functions: register, update, heartbeat, maintenance, deregister.

Every function locks the service row (``select_for_update``) for its
read-modify-write, and records status flips as ``StatusChange`` rows. Inputs are
already validated (``registry.serializers``); these functions hold the rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from berrys_portal.errors import NotFound
from registry.breakers import HEALTH_TRIP_PREFIX, OPEN, breaker_for
from registry.models import HealthStatus, Service, StatusChange

# The fields a registration or PATCH may set (status and health state are the sweep's).
WRITABLE_FIELDS = (
    "type", "health_url", "metadata", "capabilities", "endpoints", "tags", "criticality",
    "check_interval_seconds", "check_timeout_seconds", "slow_threshold_ms",
    "failures_before_critical", "successes_before_passing", "ttl_seconds",
    "deregister_after_seconds",
)


def _set_status(service: Service, *, new_status: str, reason: str, now: datetime) -> list[str]:
    """Flip ``service.status`` (row already locked) and record the flip; returns fields to save."""
    if service.status != new_status:
        StatusChange.objects.create(
            service=service, service_name=service.name, service_type=service.type,
            old_status=service.status, new_status=new_status, reason=reason[:500], at=now,
        )
        service.status_changed_at = now
    service.status = new_status
    service.status_reason = reason[:500]
    return ["status", "status_reason", "status_changed_at"]


def _apply(service: Service, data: dict[str, Any]) -> list[str]:
    changed = []
    for field in WRITABLE_FIELDS:
        if field in data:
            setattr(service, field, data[field])
            changed.append(field)
    return changed


def _locked(service: Service | int) -> Service:
    pk = service.pk if isinstance(service, Service) else service
    locked = Service.objects.select_for_update().filter(pk=pk).first()
    if locked is None:  # deregistered meanwhile
        raise NotFound(f"No registered service with id {pk}.")
    return locked


def service_register(*, data: dict[str, Any]) -> tuple[Service, bool]:
    """Create the instance identified by (name, url), or update it in place.

    Returns ``(service, created)``. Idempotent under concurrency: the insert runs
    in a savepoint; a racing registration of the same identity loses on the
    unique constraint, rolls back only the savepoint and updates the winner's
    row (works on PostgreSQL and SQLite alike). Omitted optional fields keep
    their current values; a registration counts as a heartbeat.
    """
    name, url = data["name"], data["url"]
    now = timezone.now()
    with transaction.atomic():
        service = Service.objects.select_for_update().filter(name=name, url=url).first()
        if service is None:
            fields = {f: data[f] for f in WRITABLE_FIELDS if f in data}
            fields.setdefault("check_interval_seconds", settings.HEALTH_DEFAULT_INTERVAL_SECONDS)
            fields.setdefault("check_timeout_seconds", settings.HEALTH_DEFAULT_TIMEOUT_SECONDS)
            try:
                with transaction.atomic():
                    service = Service.objects.create(
                        name=name, url=url, **fields,
                        status=HealthStatus.UNKNOWN, status_changed_at=now,
                        last_heartbeat_at=now, next_check_at=now,  # due for a first check now
                    )
                return service, True
            except IntegrityError:
                service = Service.objects.select_for_update().get(name=name, url=url)
        changed = _apply(service, data)
        service.last_heartbeat_at = now
        service.save(update_fields=[*changed, "last_heartbeat_at", "updated_at"])
        return service, False


def service_update(*, service: Service | int, data: dict[str, Any]) -> Service:
    """Change a registered instance's optional fields (not its identity, not its status)."""
    with transaction.atomic():
        locked = _locked(service)
        changed = _apply(locked, data)
        locked.save(update_fields=[*changed, "updated_at"])
        return locked


def service_heartbeat(*, service: Service | int) -> Service:
    """Record a sign of life.

    For a TTL service (not probed) the heartbeat *is* the check: an instance that
    was unknown, warning or critical becomes passing. Maintenance is left alone.
    """
    now = timezone.now()
    recovered = False
    with transaction.atomic():
        locked = _locked(service)
        locked.last_heartbeat_at = now
        fields = ["last_heartbeat_at", "updated_at"]
        if locked.ttl_seconds and locked.status not in (HealthStatus.PASSING, HealthStatus.MAINTENANCE):
            recovered = locked.status == HealthStatus.CRITICAL
            fields += _set_status(locked, new_status=HealthStatus.PASSING, reason="Heartbeat received.", now=now)
            locked.consecutive_failures = 0
            locked.critical_since = None
            fields += ["consecutive_failures", "critical_since"]
        locked.save(update_fields=fields)
    if recovered:
        _close_health_tripped_breaker(locked)
    return locked


def _close_health_tripped_breaker(service: Service) -> None:
    """A TTL service's heartbeat is its passing check: close the breaker its expiry opened.

    As a passing half-open probe does for a probed service. A breaker opened by failed
    calls or by an operator is left to its own half-open trial.
    """
    breaker = breaker_for(service)
    snap = breaker.snapshot()
    if snap.state == OPEN and snap.last_error.startswith(HEALTH_TRIP_PREFIX):
        breaker.reset(actor="heartbeat", reason="TTL heartbeat received")


def service_set_maintenance(
    *, service: Service | int, on: bool, reason: str = "", actor: str = ""
) -> Service:
    """Put an instance in maintenance (never discovered) or take it out.

    Leaving maintenance sets the status to unknown and makes the instance due
    for a health check now, so it is probed before it is preferred again.
    """
    now = timezone.now()
    by = f" (by {actor})" if actor else ""
    with transaction.atomic():
        locked = _locked(service)
        if on:
            text = f"Maintenance{by}: {reason}" if reason else f"Maintenance{by}."
            fields = _set_status(locked, new_status=HealthStatus.MAINTENANCE, reason=text, now=now)
        elif locked.status == HealthStatus.MAINTENANCE:
            text = f"Maintenance ended{by}: {reason}" if reason else f"Maintenance ended{by}."
            fields = _set_status(locked, new_status=HealthStatus.UNKNOWN, reason=text, now=now)
            locked.next_check_at = now
            locked.consecutive_failures = 0
            locked.consecutive_successes = 0
            locked.critical_since = None
            fields += ["next_check_at", "consecutive_failures", "consecutive_successes", "critical_since"]
        else:
            return locked
        locked.save(update_fields=[*fields, "updated_at"])
        return locked


def service_deregister(*, service: Service | int, reason: str = "", actor: str = "") -> bool:
    """Remove an instance, keeping a ``StatusChange`` row ("deregistered") as its epitaph.

    Returns False when the instance was already gone (deregistering twice is harmless).
    """
    now = timezone.now()
    by = f" (by {actor})" if actor else ""
    with transaction.atomic():
        pk = service.pk if isinstance(service, Service) else service
        locked = Service.objects.select_for_update().filter(pk=pk).first()
        if locked is None:
            return False
        StatusChange.objects.create(
            service=locked, service_name=locked.name, service_type=locked.type,
            old_status=locked.status, new_status=StatusChange.DEREGISTERED,
            reason=(f"Deregistered{by}: {reason}" if reason else f"Deregistered{by}.")[:500], at=now,
        )
        locked.delete()
        return True
