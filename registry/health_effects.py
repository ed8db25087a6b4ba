"""Every call the health code makes into ``registry.breakers``.

One place, so the way breaker events are recorded can change without touching the sweep
loop, the verdict rules or the writes. Alerts are not raised here: they follow from the
``StatusChange`` and ``BreakerEvent`` rows, derived by the outbox task (``registry.outbox``).

- ``plan_probes``: the breaker gate before a probe (closed → go; open → withheld; reset
  timeout over or ``force`` → the half-open trial's permit);
- ``breaker_after_probe``: what a judged probe does to its breaker (critical opens it at
  once, a failure counts toward tripping, a success after failures or a passed trial closes);
- ``breaker_events_held`` / ``breaker_events_write``: the breaker transitions of a group of
  judged probes, written as one statement after the group's results;
- ``breakers_open_expired`` / ``breakers_forget``: after TTL expiry and deregistration.
- ``next_after_withheld`` / ``next_after_critical``: when to come back, by the breaker's
  reset timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import DatabaseError

from registry.breakers import (
    HEALTH_TRIP_PREFIX,
    OPEN,
    Permit,
    ServiceBreaker,
    Snapshot,
    breaker_events_collect,
    breaker_for,
    breaker_forget,
    breaker_snapshots,
)
from registry.breakers import (
    breaker_events_write as write_events,
)
from registry.health_rules import timeout_of
from registry.models import HealthStatus, Service

logger = logging.getLogger(__name__)

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
    """Tell the service's breaker what its probe found (after its status row was written)."""
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


def breaker_events_held():
    """Hold the ``BreakerEvent`` rows of the transitions made inside (one group of judged probes)."""
    return breaker_events_collect()


def breaker_events_write(events: list) -> None:
    """Write a group's held events in one statement (the outbox derives their alerts).

    A failure is logged, not raised: the transitions stand in the breaker store and the
    group's results are already written; only the history rows are missing.
    """
    try:
        write_events(events)
    except DatabaseError:
        logger.exception("health: could not record %d breaker transition(s)", len(events))


def breakers_open_expired(services: Iterable[Service]) -> None:
    """After the TTL expiry commits: open the breakers of the services it turned critical."""
    for svc in services:
        breaker_for(svc).force_open(reason=f"{HEALTH_TRIP_PREFIX}: {svc.status_reason}")


def breakers_forget(service_ids: Iterable[int]) -> None:
    """After deregistration commits: the deleted services' breakers go too."""
    for pk in service_ids:
        breaker_forget(service_id=pk)
