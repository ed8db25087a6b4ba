"""Every call the health code makes into ``registry.breakers`` and ``registry.alerts``.

One place, so the way alerts and breaker events are raised can change without touching
the sweep loop, the verdict rules or the writes:

- ``plan_probes``: the breaker gate before a probe (closed → go; open → withheld; reset
  timeout over or ``force`` → the half-open trial's permit);
- ``breaker_after_probe``: what a judged probe does to its breaker (critical opens it at
  once, a failure counts toward tripping, a success after failures or a passed trial closes);
- ``alert_for_change``: the critical / recovered alert of a status transition (called
  inside the transaction that writes it, as before);
- ``breakers_open_expired`` / ``breakers_forget``: after TTL expiry and deregistration.
- ``next_after_withheld`` / ``next_after_critical``: when to come back, by the breaker's
  reset timeout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
from registry.health_rules import timeout_of
from registry.models import AlertKind, HealthStatus, Service

BREAKER_OPEN_REASON = "breaker open"


@dataclass
class Plan:
    """One claimed service and what its breaker said about probing it."""

    service: Service
    breaker: ServiceBreaker | None = None
    permit: Permit | None = None
    snapshot: Snapshot | None = None
    withheld: str = ""

    @property
    def trial(self) -> bool:
        return self.permit is not None and self.permit.trial


def plan_probes(services: list[Service], *, force: bool) -> list[Plan]:
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
            plan.permit = breaker.acquire(force=force, lease_seconds=timeout_of(svc))
            if plan.permit is None:
                plan.withheld = f"{BREAKER_OPEN_REASON} (trial in progress)"
        else:
            plan.withheld = BREAKER_OPEN_REASON
        plans.append(plan)
    return plans


def breaker_after_probe(plan: Plan, *, status: str, verdict: str, reason: str) -> None:
    """Tell the service's breaker what its probe found (before the status is written)."""
    if plan.breaker is None or plan.permit is None:
        return
    trial = plan.trial
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


def next_after_withheld(plan: Plan, *, checked_at: datetime, interval: timedelta) -> datetime:
    """A withheld probe comes back as soon as the breaker's reset timeout has passed."""
    snap = plan.snapshot
    reopen = (
        datetime.fromtimestamp((snap.opened_at or 0) + plan.breaker.config.reset_timeout, tz=UTC)
        if snap and snap.state == OPEN else checked_at + interval
    )
    return max(checked_at + timedelta(seconds=1), min(checked_at + interval, reopen))


def next_after_critical(plan: Plan, *, checked_at: datetime, interval: timedelta) -> datetime:
    """A critical service comes back for the half-open trial when the reset timeout ends."""
    if plan.breaker is None:
        return checked_at + interval
    return checked_at + min(interval, timedelta(seconds=plan.breaker.config.reset_timeout))


def alert_for_change(service: Service, old: str, new: str, reason: str) -> None:
    if new == HealthStatus.CRITICAL:
        alert_raise(kind=AlertKind.CRITICAL, service=service,
                    message=f"{service.name} ({service.type}) is critical: {reason or 'no reason given'}")
    elif old == HealthStatus.CRITICAL and new in (HealthStatus.PASSING, HealthStatus.WARNING):
        alert_raise(kind=AlertKind.RECOVERED, service=service,
                    message=f"{service.name} ({service.type}) recovered: now {new}")


def breakers_open_expired(services: Iterable[Service]) -> None:
    """After the TTL expiry commits: open the breakers of the services it turned critical."""
    for svc in services:
        breaker_for(svc).force_open(reason=f"{HEALTH_TRIP_PREFIX}: {svc.status_reason}")


def breakers_forget(service_ids: Iterable[int]) -> None:
    """After deregistration commits: the deleted services' breakers go too."""
    for pk in service_ids:
        breaker_forget(service_id=pk)
