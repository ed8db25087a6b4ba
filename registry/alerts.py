"""Alerts: deliver ``Alert`` rows to the channels (webhooks, ADMINS e-mail), from Celery tasks.

Where alerts come from: the outbox task derives them from ``StatusChange`` and
``BreakerEvent`` rows (``registry.outbox``: critical, recovered, breaker trip);
``alert_raise`` records the few that no transition row carries (the breaker
state store unreachable). Either way the ``Alert`` row is written in a
transaction and delivered by ``registry.alert_deliver`` after commit; no thread
of this process holds one.

Delivery: a JSON POST to every URL in ``ALERT_WEBHOOK_URLS`` under the egress
policy (vetted and pinned address, no redirects, a total deadline, a body cap),
tried ``ALERT_WEBHOOK_ATTEMPTS`` times with exponential backoff within a round,
and an e-mail to ``ADMINS``.

The guarantee: **at least once per channel**. A round starts by claiming the
row (``claimed_until`` moved forward by one UPDATE that only one worker can
win), so two workers never send the same alert at the same time. Channels that
accepted are recorded in ``delivered_to`` and skipped by later rounds. A round
that failed leaves the row for the next round after a backoff
(``ALERT_REDELIVER_SECONDS`` doubled per round, at most ``ALERT_MAX_ROUNDS``);
a worker that dies mid-round leaves the claim to expire and the periodic
catch-up sends it again. Sending is outside any transaction, so a channel can
see an alert twice (the worker died after the POST was accepted and before the
row said so): every POST carries ``Idempotency-Key: berrys-alert-<id>`` and the
payload's ``event_id`` (the same value) for receivers to de-duplicate on.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.core.mail import mail_admins
from django.db import DatabaseError, transaction
from django.db.models import F, Q
from django.utils import timezone

from berrys_portal import metrics
from registry import egress
from registry.models import Alert, HealthStatus, Service
from registry.outbox import alert_deliver_enqueue, outbox_process
from registry.transport import DeadlineExceeded, ResponseTooLarge, call_send

logger = logging.getLogger(__name__)

EMAIL_CHANNEL = "email:admins"


def _setting(name: str, default):
    return getattr(settings, name, default)


def alert_raise(*, kind: str, service: Service | None, message: str) -> None:
    """Record an alert that no transition row carries; delivered by a task after commit.

    De-duplicated by the unique key: one (kind, service) alert per ``ALERT_DEDUP_SECONDS``
    window, whichever process raises it first. Suppressed while the service is in
    maintenance. Never raises: the caller is handling a failure already.
    """
    if service is not None and service.status == HealthStatus.MAINTENANCE:
        logger.info("alert %s for %s suppressed: service in maintenance", kind, service.name)
        return
    window = _setting("ALERT_DEDUP_SECONDS", 3600)
    bucket = int(time.time() // window) if window else uuid.uuid4().hex
    key = f"{kind}:{service.pk if service is not None else '-'}:{bucket}"
    try:
        with transaction.atomic():  # a savepoint inside the caller's transaction
            Alert.objects.bulk_create(
                [Alert(service=service, service_name=service.name if service is not None else "", kind=kind,
                       message=message, created_at=timezone.now(), dedup_key=key)],
                ignore_conflicts=True,
            )
            alert_deliver_enqueue(list(Alert.objects.filter(dedup_key=key, delivered_at__isnull=True)
                                       .values_list("id", flat=True)))
    except DatabaseError:
        logger.exception("Could not record alert %s: %s", kind, message)


def _payload(alert: Alert) -> dict:
    service = alert.service
    return {
        "id": alert.pk,
        "event_id": _event_id(alert),
        "kind": alert.kind,
        "message": alert.message,
        "at": alert.created_at.isoformat(),
        "service": None if service is None and not alert.service_name else {
            "id": alert.service_id,
            "name": alert.service_name,
            "type": getattr(service, "type", ""),
            "url": getattr(service, "url", ""),
            "status": getattr(service, "status", ""),
        },
    }


def _event_id(alert: Alert) -> str:
    return f"berrys-alert-{alert.pk}"


def _post_with_retries(url: str, payload: dict) -> str:
    """POST until a 2xx; exponential backoff between tries. Returns '' or the last error."""
    attempts = _setting("ALERT_WEBHOOK_ATTEMPTS", 4)
    base = _setting("ALERT_WEBHOOK_BACKOFF_SECONDS", 0.5)
    timeout = _setting("ALERT_WEBHOOK_TIMEOUT_SECONDS", 5.0)
    error = ""
    for n in range(attempts):
        try:
            # Under the egress policy like every outbound call: vetted, pinned address, no
            # redirects followed (a 3xx is not delivered), a total deadline, a small body cap.
            response = call_send("POST", url, json_body=payload, deadline_seconds=timeout, max_body=65536,
                                 headers={"Idempotency-Key": payload["event_id"]})
            if response.status < 300:
                return ""
            error = f"{url}: HTTP {response.status}"
        except (requests.RequestException, egress.EgressDenied, egress.EgressLookupError,
                DeadlineExceeded, ResponseTooLarge) as exc:
            error = f"{url}: {type(exc).__name__}: {exc}"
        if n + 1 < attempts:
            time.sleep(base * (2 ** n))
    return error


def _channels() -> list[str]:
    return [*_setting("ALERT_WEBHOOK_URLS", []), *([EMAIL_CHANNEL] if settings.ADMINS else [])]


def _send(channel: str, alert: Alert, payload: dict) -> str:
    if channel != EMAIL_CHANNEL:
        return _post_with_retries(channel, payload)
    try:
        mail_admins(f"[Berrys Portal] {alert.get_kind_display()}: {alert.service_name or 'portal'}",
                    alert.message)
    except Exception as exc:  # noqa: BLE001 - SMTP down must not lose the webhook result
        return f"email: {exc}"
    return ""


def _round_lease() -> timedelta:
    """How long one delivery round may take: the claim outlives it, so nobody else starts one."""
    attempts = _setting("ALERT_WEBHOOK_ATTEMPTS", 4)
    timeout = _setting("ALERT_WEBHOOK_TIMEOUT_SECONDS", 5.0)
    backoff = sum(_setting("ALERT_WEBHOOK_BACKOFF_SECONDS", 0.5) * 2 ** n for n in range(attempts - 1))
    per_url = attempts * timeout + backoff
    return timedelta(seconds=per_url * max(len(_setting("ALERT_WEBHOOK_URLS", [])), 1)
                     + _setting("ALERT_ROUND_MARGIN_SECONDS", 60))


def _due(now: datetime) -> Q:
    return (Q(delivered_at__isnull=True, attempts__lt=_setting("ALERT_MAX_ROUNDS", 5))
            & (Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)))


def alert_deliver(*, alert_id: int) -> bool:
    """One delivery round of one alert, if this worker wins its claim; True if it went out now."""
    now = timezone.now()
    claimed = Alert.objects.filter(_due(now), pk=alert_id).update(
        claimed_until=now + _round_lease(), attempts=F("attempts") + 1,
    )
    if not claimed:
        return False  # delivered, given up, or another worker's round is in progress
    alert = Alert.objects.select_related("service").get(pk=alert_id)
    payload = _payload(alert)
    accepted, errors = list(alert.delivered_to), []
    for channel in _channels():
        if channel in accepted:
            continue
        error = _send(channel, alert, payload)
        if error:
            errors.append(error)
        else:
            accepted.append(channel)
    done = timezone.now()
    retry_in = timedelta(seconds=_setting("ALERT_REDELIVER_SECONDS", 120) * 2 ** (alert.attempts - 1))
    Alert.objects.filter(pk=alert.pk).update(
        delivered_to=accepted,
        delivered_at=None if errors else done,
        claimed_until=done + retry_in if errors else None,
        last_error="; ".join(errors)[:5000],
    )
    metrics.record_alert_round(kind=alert.kind, outcome="failed" if errors else "delivered")
    if errors:
        logger.warning("alert %s not fully delivered (round %d): %s", alert.pk, alert.attempts, errors)
    return not errors


def alerts_due(*, now: datetime | None = None, limit: int = 100) -> list[int]:
    """Alerts a delivery round may start for now: new, failed and past their backoff, or whose
    round's claim expired (the worker died)."""
    return list(Alert.objects.filter(_due(now or timezone.now())).order_by("created_at")
                .values_list("id", flat=True)[:limit])


def alerts_catch_up() -> tuple[int, int]:
    """The periodic catch-up: process the transitions a crash left behind and enqueue the due
    alerts. Returns (alerts queued by processing, due alerts queued)."""
    queued = outbox_process()
    due = alerts_due()
    alert_deliver_enqueue(due)
    return len(queued), len(due)


def alerts_flush() -> int:
    """Process the outbox and deliver every due alert in this process, at once (tests, commands).

    Returns the alerts delivered. The running system does this in Celery tasks instead.
    """
    outbox_process()
    return sum(alert_deliver(alert_id=alert_id) for alert_id in alerts_due())
