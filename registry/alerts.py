"""Alerts: tell operators when a service turns critical, recovers, or its breaker trips.

``alert_raise`` never blocks its caller and never touches the caller's
transaction: de-duplication, the ``Alert`` row and delivery all happen on a
background thread with its own database connection. Delivery is a JSON POST to
every URL in ``ALERT_WEBHOOK_URLS`` (retried with exponential backoff) and an
e-mail to ``ADMINS``. Alerts that could not be delivered (process died,
webhook down) are retried by ``alerts_redeliver`` from the periodic prune task.

Rules:
- suppressed while the service is in maintenance;
- de-duplicated: a (service, kind) alert is not re-sent while it is still the
  service's latest alert (the state has not changed since) and younger than
  ``ALERT_DEDUP_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

import requests
from django.conf import settings
from django.core.mail import mail_admins
from django.db import close_old_connections, connections, transaction
from django.utils import timezone

from registry import egress
from registry.models import Alert, HealthStatus, Service
from registry.transport import DeadlineExceeded, ResponseTooLarge, call_send

logger = logging.getLogger(__name__)

_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="alerts")
_pending: list[Future] = []
_pending_lock = threading.Lock()
_dedupe_lock = threading.Lock()


def _setting(name: str, default):
    return getattr(settings, name, default)


def _close_when_idle() -> None:
    """Close this thread's own connection once no more alert work waits (one connection per
    alert cost ~30 ms each: a sweep turning 100 services critical spent seconds connecting)."""
    if _executor._work_queue.empty():
        connections.close_all()


def _submit(fn, *args) -> None:
    fut = _executor.submit(fn, *args)
    with _pending_lock:
        _pending[:] = [f for f in _pending if not f.done()]
        _pending.append(fut)


def alerts_flush(timeout: float = 30.0) -> None:
    """Wait for every alert raised so far to be recorded and delivered (tests, commands)."""
    while True:
        with _pending_lock:
            pending = [f for f in _pending if not f.done()]
        if not pending:
            return
        for fut in pending:
            fut.result(timeout=timeout)


def alert_raise(*, kind: str, service: Service | None, message: str) -> None:
    """Queue an alert; returns at once. Safe inside a transaction (sent after commit)."""
    service_id = service.pk if service is not None else None
    service_name = service.name if service is not None else ""

    def hand_off() -> None:
        _submit(_record_and_deliver, kind, service_id, service_name, message)

    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(hand_off)
    else:
        hand_off()


def _suppressed(kind: str, service: Service | None, service_id: int | None) -> str:
    if service is not None and service.status == HealthStatus.MAINTENANCE:
        return "service in maintenance"
    window = timedelta(seconds=_setting("ALERT_DEDUP_SECONDS", 3600))
    latest = Alert.objects.filter(service_id=service_id).order_by("-created_at").first()
    if latest is not None and latest.kind == kind and latest.created_at > timezone.now() - window:
        return f"duplicate of alert {latest.pk}"
    return ""


def _record_and_deliver(kind: str, service_id: int | None, service_name: str, message: str) -> None:
    close_old_connections()
    try:
        service = Service.objects.filter(pk=service_id).first() if service_id else None
        # One thread decides at a time, so two simultaneous trips make one alert.
        with _dedupe_lock:
            reason = _suppressed(kind, service, service_id)
            if reason:
                logger.info("alert %s for %s suppressed: %s", kind, service_name or "-", reason)
                return
            alert = Alert.objects.create(
                service=service, service_name=service_name, kind=kind, message=message,
                created_at=timezone.now(),
            )
        _deliver(alert)
    except Exception:  # noqa: BLE001 - alerting must never take anything down
        logger.exception("Could not record or deliver alert %s for %s", kind, service_name)
    finally:
        _close_when_idle()


def _payload(alert: Alert) -> dict:
    service = alert.service
    return {
        "id": alert.pk,
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
            response = call_send("POST", url, json_body=payload, deadline_seconds=timeout,
                                 max_body=65536)
            if response.status < 300:
                return ""
            error = f"{url}: HTTP {response.status}"
        except (requests.RequestException, egress.EgressDenied, egress.EgressLookupError,
                DeadlineExceeded, ResponseTooLarge) as exc:
            error = f"{url}: {type(exc).__name__}: {exc}"
        if n + 1 < attempts:
            time.sleep(base * (2 ** n))
    return error


def _deliver(alert: Alert) -> None:
    payload = _payload(alert)
    errors = [e for url in _setting("ALERT_WEBHOOK_URLS", []) if (e := _post_with_retries(url, payload))]
    if settings.ADMINS:
        try:
            mail_admins(f"[Berrys Portal] {alert.get_kind_display()}: {alert.service_name or 'portal'}",
                        alert.message)
        except Exception as exc:  # noqa: BLE001 - SMTP down must not lose the webhook result
            errors.append(f"email: {exc}")
    Alert.objects.filter(pk=alert.pk).update(
        attempts=alert.attempts + 1,
        delivered_at=None if errors else timezone.now(),
        last_error="; ".join(errors)[:5000],
    )
    if errors:
        logger.warning("alert %s not fully delivered: %s", alert.pk, errors)


def _redeliver_one(alert_id: int) -> None:
    close_old_connections()
    try:
        alert = Alert.objects.select_related("service").get(pk=alert_id)
        _deliver(alert)
    except Exception:  # noqa: BLE001
        logger.exception("Could not re-deliver alert %s", alert_id)
    finally:
        _close_when_idle()


def alerts_redeliver(*, older_than_seconds: int = 120, max_attempts: int = 5) -> int:
    """Queue re-delivery of alerts that are still undelivered after a while."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(
        Alert.objects.filter(delivered_at__isnull=True, created_at__lte=cutoff, attempts__lt=max_attempts)
        .values_list("id", flat=True)[:100]
    )
    for alert_id in ids:
        _submit(_redeliver_one, alert_id)
    return len(ids)
