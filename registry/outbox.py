"""The outbox: alerts follow from the transition rows, processed by a Celery task.

Healthchecks' ``Flip.processed`` pattern. ``StatusChange`` and ``BreakerEvent``
rows are written in the transaction that makes the change, with ``processed``
empty. Writing them enqueues ``registry.outbox_process`` once that transaction
commits (``outbox_kick``); the periodic ``registry.outbox_catch_up`` finds what a
crash (or a broker outage) left behind. The task claims unprocessed rows
(``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite the transaction
takes the database's write lock at BEGIN), derives their alerts, inserts them and
marks the rows processed in one transaction, then enqueues one
``registry.alert_deliver`` per alert after commit.

De-duplication is a database constraint, ``Alert.dedup_key`` (unique), not a lock:

- a status change gives at most one alert, keyed by the change's id
  (``status-change:<id>``): critical when it turns critical, recovered when it
  leaves critical for passing or warning;
- a breaker that opens gives one alert per *episode*, keyed by the event that
  opened it from closed (``breaker-trip:<service>:<event id>``): a failed
  half-open trial re-opening the breaker belongs to the same episode. A trip
  caused by the health verdict (``HEALTH_TRIP_PREFIX``) is announced by the
  critical alert and gives none;
- nothing is sent for a service in maintenance when the row is processed.

Two workers processing the same rows (a task delivered twice, the catch-up
racing the on-commit task) insert the same keys: one insert wins, the other is
ignored. The rows' metrics (``berrys_transitions_processed``) are counted here, once per row.
Delivery and its guarantee: ``registry.alerts``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from berrys_portal import metrics
from registry.models import (
    Alert,
    AlertKind,
    BreakerEvent,
    BreakerState,
    HealthStatus,
    Service,
    StatusChange,
)

logger = logging.getLogger(__name__)

# The reason prefix of a breaker trip caused by the health verdict (the critical alert announces
# it); registry.breakers writes it.
HEALTH_TRIP_PREFIX = "health critical"
BATCH = 500


def outbox_kick() -> None:
    """Have the outbox task process new transition rows once the current transaction commits.

    Safe anywhere: inside a transaction the task is enqueued after commit (a rolled-back
    transaction enqueues nothing), outside one at once. A broker that cannot take the
    message loses nothing: the rows wait for ``registry.outbox_catch_up``.
    """
    transaction.on_commit(_enqueue_process)


def _enqueue_process() -> None:
    from registry.tasks import outbox_process_task  # late: tasks import the health sweep

    try:
        outbox_process_task.apply_async(retry=False)
    except Exception:  # noqa: BLE001 - the periodic catch-up delivers what this could not enqueue
        logger.warning("outbox: could not enqueue the outbox task; the catch-up will", exc_info=True)


def alert_deliver_enqueue(alert_ids: list[int]) -> None:
    """Enqueue one delivery task per alert (after the current transaction commits)."""
    if not alert_ids:
        return

    def enqueue() -> None:
        from registry.tasks import alert_deliver_task

        for alert_id in alert_ids:
            try:
                alert_deliver_task.apply_async((alert_id,), retry=False)
            except Exception:  # noqa: BLE001 - the catch-up delivers due alerts
                logger.warning("outbox: could not enqueue delivery of alert %s", alert_id, exc_info=True)
                return

    transaction.on_commit(enqueue)


@dataclass(frozen=True)
class _Draft:
    key: str
    kind: str
    service: Service | None
    service_name: str
    message: str


def _status_alert(change: StatusChange, service: Service | None) -> _Draft | None:
    where = f"{change.service_name} ({change.service_type})"
    if change.new_status == HealthStatus.CRITICAL:
        kind, message = AlertKind.CRITICAL, f"{where} is critical: {change.reason or 'no reason given'}"
    elif change.old_status == HealthStatus.CRITICAL and change.new_status in (HealthStatus.PASSING,
                                                                            HealthStatus.WARNING):
        kind, message = AlertKind.RECOVERED, f"{where} recovered: now {change.new_status}"
    else:
        return None
    return _Draft(f"status-change:{change.pk}", kind, service, change.service_name, message)


def _episode_start(event: BreakerEvent) -> int:
    """The id of the event that opened this breaker from closed (the episode this event is in)."""
    if event.old_state == BreakerState.CLOSED or event.service_id is None:
        return event.pk
    start = (BreakerEvent.objects.filter(service_id=event.service_id, id__lt=event.pk,
                                         old_state=BreakerState.CLOSED)
             .order_by("-id").values_list("id", flat=True).first())
    return start or event.pk


def _breaker_alert(event: BreakerEvent, service: Service | None) -> _Draft | None:
    if event.new_state != BreakerState.OPEN or service is None or event.last_error.startswith(HEALTH_TRIP_PREFIX):
        return None
    message = f"Circuit breaker of {service.name} opened ({event.old_state} → open). {event.last_error}".strip()
    return _Draft(f"breaker-trip:{event.service_id}:{_episode_start(event)}", AlertKind.BREAKER_TRIP,
                  service, event.service_name, message)


def _claim(model) -> list:
    # SKIP LOCKED: another worker's batch is its own, this one takes the next rows. On SQLite
    # select_for_update is a no-op; the IMMEDIATE transaction holds the database's write lock.
    return list(model.objects.filter(processed__isnull=True).order_by("id")
                .select_for_update(skip_locked=True)[:BATCH])


def outbox_process_once() -> tuple[int, list[int]]:
    """Process one batch of unprocessed transitions; returns (rows processed, alert ids to deliver)."""
    now = timezone.now()
    with transaction.atomic():
        changes = _claim(StatusChange)
        events = _claim(BreakerEvent)
        if not changes and not events:
            return 0, []
        ids = {r.service_id for r in [*changes, *events] if r.service_id is not None}
        services = Service.objects.in_bulk(list(ids))
        drafts = [
            *(_status_alert(c, services.get(c.service_id)) for c in changes),
            *(_breaker_alert(e, services.get(e.service_id)) for e in events),
        ]
        drafts = [d for d in drafts if d is not None]
        quiet = [d for d in drafts if d.service is not None and d.service.status == HealthStatus.MAINTENANCE]
        for d in quiet:
            logger.info("alert %s for %s suppressed: service in maintenance", d.kind, d.service_name)
        send = [d for d in drafts if d not in quiet]
        if send:
            # The constraint is the de-duplication: a key another worker inserted first is skipped.
            Alert.objects.bulk_create(
                [Alert(service=d.service, service_name=d.service_name, kind=d.kind, message=d.message,
                       created_at=now, dedup_key=d.key) for d in send],
                ignore_conflicts=True,
            )
        StatusChange.objects.filter(pk__in=[c.pk for c in changes]).update(processed=now)
        BreakerEvent.objects.filter(pk__in=[e.pk for e in events]).update(processed=now)
        # Metrics follow from the rows too; counted once the claim's transaction commits.
        counts = Counter([("status", c.new_status) for c in changes] + [("breaker", e.new_state) for e in events])
        transaction.on_commit(lambda: _count(counts))
        alert_ids = list(Alert.objects.filter(dedup_key__in=[d.key for d in send], delivered_at__isnull=True)
                         .values_list("id", flat=True))
        alert_deliver_enqueue(alert_ids)
    return len(changes) + len(events), alert_ids


def _count(counts: Counter) -> None:
    for (kind, to), n in counts.items():
        metrics.record_transitions(kind=kind, to=to, count=n)


def outbox_process() -> list[int]:
    """Process every unprocessed transition (batch by batch); returns the alert ids it queued."""
    queued: list[int] = []
    while True:
        n, ids = outbox_process_once()
        queued.extend(ids)
        if n == 0:
            return queued
