"""Health monitoring's entry points: the beat sweep under its global lock, and "check now".

The work is split by job:

- ``registry.health_rules``: verdict rules, pure functions (a probe's answer → passing /
  warning / critical; a service's thresholds and a breaker trial → its next status);
- ``registry.health_loop``: the sweep loop (claim due services, send probes to the
  prober's event loop, hand results to the writer thread);
- ``registry.health_results``: what a probe saw, its evaluation, and the grouped writes
  (guarded service UPDATE, snapshots, ``StatusChange`` rows, alerts) in one transaction;
- ``registry.health_effects``: every call into ``registry.breakers`` and ``registry.alerts``;
- ``registry.health_expiry``: TTL expiry, deregistration, the most overdue check, pruning.

``health_sweep`` (Celery beat every few seconds, and ``manage.py check_health``) takes a
global lock (cache ``add`` = Redis ``SET NX`` with a TTL) so only one sweep coordinates at
a time, whatever the number of beats and workers; helper workers run ``health_sweep_run``
alongside it (skip-locked claims, no overlap). Slow probes are left to a background
writer, so the lock is never held waiting for them.
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.core.cache import cache

from registry.health_expiry import health_deregister_expired, health_ttl_expire
from registry.health_loop import health_sweep_run, probed
from registry.health_results import SweepReport
from registry.models import Service

logger = logging.getLogger(__name__)

SWEEP_LOCK_KEY = "health:sweep:lock"


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
        service_ids = list(Service.objects.filter(probed()).values_list("id", flat=True))
    report = health_sweep_run(service_ids=service_ids, force=True, keep_rows=keep_rows)
    report.ttl_expired = health_ttl_expire()
    return report
