"""Registry service functions: register, update, heartbeat, maintenance, deregister, approve, owner.

Every function locks the service row (``select_for_update``) for its
read-modify-write, and records status flips as ``StatusChange`` rows. Inputs are
already validated (``registry.serializers``); these functions hold the rules.

Identity: ``key`` is the API key acting (``None``: an operator in the admin or a
management command, trusted). It is a required argument of the functions a
service's own requests reach (register, update, heartbeat), so a new way in —
another API, a compatibility endpoint — has to say who is acting. A key may change only the services it registered
(``Service.owner``) unless it has ``registry:admin``; services without an owner
(registered before ownership existed, or by an operator) are changed only by
registry:admin keys and operators, and an operator gives them an owner in the
admin. Ownership moves only by an operator (``service_owner_set``, audited).
A key may be limited to types and name patterns, and by quotas on the instances
it owns and the distinct hosts they point at.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from berrys_portal.errors import Conflict, Forbidden, NotFound, QuotaExceeded
from registry.audit import actor_of, audit_record
from registry.breakers import HEALTH_TRIP_PREFIX, OPEN, breaker_for
from registry.models import ApiKey, AuditEvent, HealthStatus, Service, StatusChange
from registry.rows import service_by_identity, service_by_pk, service_heartbeat_set
from registry.scopes import Scope, key_has_scope, key_may_register

# The fields a registration or PATCH may set (status and health state are the sweep's).
WRITABLE_FIELDS = (
    "type", "health_url", "metadata", "capabilities", "endpoints", "tags", "criticality",
    "check_interval_seconds", "check_timeout_seconds", "slow_threshold_ms",
    "failures_before_critical", "successes_before_passing", "ttl_seconds",
    "deregister_after_seconds",
)


def _apply(service: Service, data: dict[str, Any]) -> list[str]:
    """Set the fields ``data`` changes; returns their names (only those are written)."""
    changed = []
    for field in WRITABLE_FIELDS:
        if field in data and getattr(service, field) != data[field]:
            setattr(service, field, data[field])
            changed.append(field)
    return changed


def _locked(service: Service | int, key: ApiKey | None = None) -> Service:
    pk = service.pk if isinstance(service, Service) else service
    locked = Service.objects.select_for_update().filter(pk=pk).first()
    if locked is None:  # deregistered meanwhile
        raise NotFound(f"No registered service with id {pk}.")
    service_check_manager(service=locked, key=key)
    return locked


def service_check_manager(*, service: Service, key: ApiKey | None) -> None:
    """Raise Forbidden unless ``key`` may change ``service`` (its owner, a registry:admin key, or no key)."""
    if key is None or service.owner_id == key.pk or key_has_scope(key, Scope.REGISTRY_ADMIN):
        return
    if service.owner_id is None:
        raise Forbidden(
            f"Service {service.pk} ({service.name}) has no owner: only a registry:admin key or an "
            "operator may change it (an operator can give it an owner in the admin)."
        )
    raise Forbidden(
        f"Service {service.pk} ({service.name}) was registered by another API key: only that key, "
        "a registry:admin key or an operator may change it."
    )


def _hosts(*urls: str) -> set[str]:
    return {host.lower() for url in urls if url and (host := urlsplit(url).hostname)}


def _quota_check(*, key: ApiKey, new_instance: bool, url: str, health_url: str, exclude: int | None = None) -> None:
    """Raise QuotaExceeded if this registration would take ``key`` over its limits.

    Locks the key's row first, so two concurrent registrations by one key cannot
    both slip under the limit. Counts are over the key's own services (few rows).
    """
    ApiKey.objects.select_for_update().filter(pk=key.pk).first()
    owned = Service.objects.filter(owner=key)
    if exclude is not None:
        owned = owned.exclude(pk=exclude)
    rows = list(owned.values_list("url", "health_url"))  # one query for both limits
    if new_instance:
        limit = key.max_instances or settings.REGISTRY_KEY_MAX_INSTANCES
        count = len(rows)
        if count >= limit:
            source = "the key's max_instances" if key.max_instances else "REGISTRY_KEY_MAX_INSTANCES"
            raise QuotaExceeded(
                f"Quota: this API key already owns {count} service instance(s), its limit of {limit} "
                f"({source}). Deregister one, or ask an operator to raise the key's max_instances."
            )
    hosts: set[str] = set()
    for owned_url, owned_health in rows:
        hosts |= _hosts(owned_url, owned_health)
    wanted = hosts | _hosts(url, health_url)
    limit = key.max_hosts or settings.REGISTRY_KEY_MAX_HOSTS
    if len(wanted) > limit and len(wanted) > len(hosts):
        source = "the key's max_hosts" if key.max_hosts else "REGISTRY_KEY_MAX_HOSTS"
        raise QuotaExceeded(
            f"Quota: this API key's services would point at {len(wanted)} distinct hosts, over its limit "
            f"of {limit} ({source}). Reuse a host, or ask an operator to raise the key's max_hosts."
        )


def _audit_quota(key: ApiKey, exc: QuotaExceeded, target: str) -> None:
    # Written after the refused transaction rolled back, so the row survives it.
    audit_record(action=AuditEvent.Action.QUOTA_REFUSED, actor=actor_of(key=key), target=target,
                 details={"detail": exc.message})


def service_register(*, data: dict[str, Any], key: ApiKey | None) -> tuple[Service, bool]:
    """Create the instance identified by (name, url), or update it in place.

    Returns ``(service, created)``. Idempotent under concurrency: the insert runs
    in a savepoint; a racing registration of the same identity loses on the
    unique constraint, rolls back only the savepoint and updates the winner's
    row (works on PostgreSQL and SQLite alike). Omitted optional fields keep
    their current values; a registration counts as a heartbeat.

    With a ``key``: the key must be allowed the type and name, a new instance is
    owned by it (and counts against its quotas; a type in REGISTRY_APPROVAL_TYPES
    waits for approval unless the key has registry:admin), and an existing one
    may be re-registered only by its manager (``service_check_manager``).
    Re-registration never changes the type (409).
    """
    name, url = data["name"], data["url"]
    if key is not None and (why := key_may_register(key, service_type=data["type"], name=name)):
        raise Forbidden(why)
    try:
        return _service_register(data, key)
    except QuotaExceeded as exc:
        _audit_quota(key, exc, f"service {name} at {url}")
        raise


def _unchanged(service: Service, data: dict[str, Any]) -> bool:
    return (data.get("type", service.type) == service.type
            and all(getattr(service, f) == data[f] for f in WRITABLE_FIELDS if f in data))


def _heartbeat_write(service: Service, now) -> bool:
    """Only the heartbeat timestamp: no lock, no transaction, one UPDATE (False: the row is gone).

    Coalesced: within REGISTRY_HEARTBEAT_COALESCE_SECONDS of the recorded heartbeat (for a
    TTL service, a tenth of its TTL if less) nothing is written and the recorded time stays.
    Nothing reads the heartbeat more finely: the TTL check allows ``ttl_seconds``, and the
    window is at most a tenth of it.
    """
    window = settings.REGISTRY_HEARTBEAT_COALESCE_SECONDS
    if service.ttl_seconds:
        window = min(window, service.ttl_seconds / 10)
    last = service.last_heartbeat_at
    if last is not None and window > 0 and timedelta(0) <= now - last < timedelta(seconds=window):
        return True
    if not service_heartbeat_set(service.pk, now):
        return False
    service.last_heartbeat_at = now
    return True


def _service_register(data: dict[str, Any], key: ApiKey | None) -> tuple[Service, bool]:
    name, url = data["name"], data["url"]
    now = timezone.now()
    # A re-registration that changes nothing (the usual one: a service re-announcing itself)
    # is a heartbeat: one read, one UPDATE of last_heartbeat_at, no row lock. A concurrent
    # change is not lost: the UPDATE touches no column the change writes.
    current = service_by_identity(name, url)
    if current is not None and _unchanged(current, data):
        service_check_manager(service=current, key=key)
        if _heartbeat_write(current, now):
            return current, False
    with transaction.atomic():
        service = Service.objects.select_for_update().filter(name=name, url=url).first()
        if service is None:
            fields = {f: data[f] for f in WRITABLE_FIELDS if f in data}
            fields.setdefault("check_interval_seconds", settings.HEALTH_DEFAULT_INTERVAL_SECONDS)
            fields.setdefault("check_timeout_seconds", settings.HEALTH_DEFAULT_TIMEOUT_SECONDS)
            pending = False
            if key is not None:
                _quota_check(key=key, new_instance=True, url=url, health_url=fields.get("health_url", ""))
                pending = (fields["type"] in settings.REGISTRY_APPROVAL_TYPES
                           and not key_has_scope(key, Scope.REGISTRY_ADMIN))
            try:
                with transaction.atomic():
                    service = Service.objects.create(
                        name=name, url=url, **fields, owner=key, pending_approval=pending,
                        status=HealthStatus.UNKNOWN, status_changed_at=now,
                        last_heartbeat_at=now, next_check_at=now,  # due for a first check now
                    )
                return service, True
            except IntegrityError:
                service = Service.objects.select_for_update().get(name=name, url=url)
        service_check_manager(service=service, key=key)
        if "type" in data and data["type"] != service.type:
            raise Conflict(
                f"Service {service.pk} ({service.name} at {service.url}) is registered as {service.type}; "
                f"a registration cannot change its type to {data['type']}. Register a new instance "
                "(another name or url) and deregister this one."
            )
        if key is not None and "health_url" in data and data["health_url"] != service.health_url:
            _quota_check(key=key, new_instance=False, url=url, health_url=data["health_url"], exclude=service.pk)
        changed = _apply(service, data)
        service.last_heartbeat_at = now
        service.save(update_fields=[*changed, "last_heartbeat_at", "updated_at"])
        return service, False


def service_update(*, service: Service | int, data: dict[str, Any], key: ApiKey | None) -> Service:
    """Change a registered instance's optional fields (not its identity, not its status).

    Through the API (a ``key``) the type is fixed too (409), and a new health URL
    counts against the key's host quota.
    """
    try:
        with transaction.atomic():
            locked = _locked(service, key)
            if key is not None and "type" in data and data["type"] != locked.type:
                raise Conflict(
                    f"Service {locked.pk} is registered as {locked.type}; its type cannot change to "
                    f"{data['type']}. Register a new instance and deregister this one."
                )
            if key is not None and "health_url" in data and data["health_url"] != locked.health_url:
                # Quotas count against the owner (an admin key changing another's service counts there).
                owner = locked.owner or key
                _quota_check(key=owner, new_instance=False, url=locked.url, health_url=data["health_url"],
                             exclude=locked.pk)
            changed = _apply(locked, data)
            locked.save(update_fields=[*changed, "updated_at"])
            return locked
    except QuotaExceeded as exc:
        _audit_quota(key, exc, f"service {service.pk if isinstance(service, Service) else service}")
        raise


def service_heartbeat(*, service: Service | int, key: ApiKey | None) -> Service:
    """Record a sign of life.

    For a TTL service (not probed) the heartbeat *is* the check: an instance that
    was unknown, warning or critical becomes passing. Maintenance is left alone.
    Only the service's manager may heartbeat it (a stranger keeping a dead
    instance "passing" would route calls to it).
    """
    now = timezone.now()
    recovered = False
    pk = service.pk if isinstance(service, Service) else service
    current = service_by_pk(pk)
    if current is None:
        raise NotFound(f"No registered service with id {pk}.")
    if not (current.ttl_seconds and current.status not in (HealthStatus.PASSING, HealthStatus.MAINTENANCE)):
        # Nothing but the timestamp changes (the usual heartbeat): one UPDATE, no row lock.
        service_check_manager(service=current, key=key)
        if _heartbeat_write(current, now):
            return current
        raise NotFound(f"No registered service with id {current.pk}.")
    with transaction.atomic():
        locked = _locked(service, key)
        locked.last_heartbeat_at = now
        fields = ["last_heartbeat_at", "updated_at"]
        if locked.ttl_seconds and locked.status not in (HealthStatus.PASSING, HealthStatus.MAINTENANCE):
            recovered = locked.status == HealthStatus.CRITICAL
            fields += locked.flip(HealthStatus.PASSING, reason="Heartbeat received.", at=now,
                                  actor=actor_of(key=key, default="heartbeat"))
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
    *, service: Service | int, on: bool, reason: str = "", actor: str = "", key: ApiKey | None = None
) -> Service:
    """Put an instance in maintenance (never discovered) or take it out.

    Leaving maintenance sets the status to unknown and makes the instance due
    for a health check now, so it is probed before it is preferred again.
    """
    now = timezone.now()
    by = f" (by {actor})" if actor else ""
    with transaction.atomic():
        locked = _locked(service, key)
        if on:
            text = f"Maintenance{by}: {reason}" if reason else f"Maintenance{by}."
            fields = locked.flip(HealthStatus.MAINTENANCE, reason=text, at=now, actor=actor)
        elif locked.status == HealthStatus.MAINTENANCE:
            text = f"Maintenance ended{by}: {reason}" if reason else f"Maintenance ended{by}."
            fields = locked.flip(HealthStatus.UNKNOWN, reason=text, at=now, actor=actor)
            locked.next_check_at = now
            locked.consecutive_failures = 0
            locked.consecutive_successes = 0
            locked.critical_since = None
            fields += ["next_check_at", "consecutive_failures", "consecutive_successes", "critical_since"]
        else:
            return locked
        locked.save(update_fields=[*fields, "updated_at"])
        return locked


def service_deregister(
    *, service: Service | int, reason: str = "", actor: str = "", key: ApiKey | None = None
) -> bool:
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
        service_check_manager(service=locked, key=key)
        # The epitaph goes through the same rule; the row is deleted, not saved.
        locked.flip(StatusChange.DEREGISTERED, at=now, actor=actor,
                    reason=f"Deregistered{by}: {reason}" if reason else f"Deregistered{by}.")
        locked.delete()
        return True


def service_owner_set(*, service: Service | int, owner: ApiKey | None, actor: str) -> Service:
    """An operator gives a service to another key (or to none); the only way ownership moves. Audited."""
    with transaction.atomic():
        locked = _locked(service)
        old = locked.owner
        if (old.pk if old else None) == (owner.pk if owner else None):
            return locked
        locked.owner = owner
        locked.save(update_fields=["owner", "updated_at"])
        audit_record(
            action=AuditEvent.Action.OWNER_CHANGED, actor=actor, target=str(locked),
            details={"service_id": locked.pk, "from": str(old) if old else None,
                     "to": str(owner) if owner else None},
        )
        return locked


def service_approve(*, service: Service | int, actor: str) -> bool:
    """An operator lets a pending instance be discovered. Returns False if it was not pending. Audited."""
    with transaction.atomic():
        locked = _locked(service)
        if not locked.pending_approval:
            return False
        locked.pending_approval = False
        locked.save(update_fields=["pending_approval", "updated_at"])
        audit_record(
            action=AuditEvent.Action.SERVICE_APPROVED, actor=actor, target=str(locked),
            details={"service_id": locked.pk, "owner": str(locked.owner) if locked.owner else None},
        )
        return True
