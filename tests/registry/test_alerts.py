"""Alerts: webhook and e-mail on critical / recovery / breaker trip; derived from the transition
rows, de-duplicated by a constraint, retried with backoff, suppressed during maintenance, never
sent by the sweep itself.

Delivery runs in Celery tasks in production; here ``alerts_flush`` runs the same functions in
this process. The multi-process guarantees (two workers, a killed worker) are in test_outbox.py.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.db import transaction
from django.utils import timezone

from berrys_portal.errors import ServiceResponseError
from registry import alerts, health, outbox
from registry.breakers import breaker_config, breaker_for
from registry.client import ServiceClient
from registry.models import Alert, HealthStatus, Service, StatusChange
from tests.registry.loopback import Reply, sequence

pytestmark = pytest.mark.both_dbs


@pytest.fixture
def hook(loopback, settings):
    server = loopback({"/hook": Reply(204)})
    settings.ALERT_WEBHOOK_URLS = [server.url + "/hook"]
    settings.ALERT_WEBHOOK_BACKOFF_SECONDS = 0.05
    settings.ADMINS = [("ops", "ops@example.com")]
    return server


def _bodies(server):
    return [h.body for h in server.hits if h.path == "/hook"]


def _flip(svc: Service, new: str, reason: str = "") -> None:
    with transaction.atomic():
        locked = Service.objects.select_for_update().get(pk=svc.pk)
        locked.save(update_fields=locked.flip(new, reason=reason, at=timezone.now(), actor="test"))


def test_a_service_turning_critical_and_recovering_sends_webhooks_and_email(loopback, make_service, hook):
    server = loopback({"/health": Reply(500)})
    svc = make_service(url=server.url, name="planner-1", successes_before_passing=1)
    health.health_sweep()
    alerts.alerts_flush()

    server.routes["/health"] = Reply(200, {"status": "healthy"})
    health.health_check_now(service_ids=[svc.pk])  # the operator's check: the trial, passing
    alerts.alerts_flush()

    kinds = [b["kind"] for b in _bodies(hook)]
    assert kinds == ["critical", "recovered"]
    critical = next(b for b in _bodies(hook) if b["kind"] == "critical")
    assert critical["service"]["name"] == "planner-1" and "HTTP 500" in critical["message"]
    assert any("planner-1" in m.subject and m.to == ["ops@example.com"] for m in mail.outbox)
    assert Alert.objects.filter(service=svc, delivered_at__isnull=False).count() == len(kinds)
    # Each delivery names its alert, so a receiver can drop a repeat.
    keys = [h.headers.get("Idempotency-Key") for h in hook.hits]
    assert keys == [b["event_id"] for b in _bodies(hook)] and len(set(keys)) == 2


def test_a_breaker_trip_sends_one_alert_even_when_it_reopens(loopback, make_service, hook):
    server = loopback({"/x": Reply(500)})
    svc = make_service(url=server.url, breaker_fail_max=1)
    client = ServiceClient(sleep=lambda s: None)
    with pytest.raises(ServiceResponseError):
        client.get(service=svc, endpoint="/x")
    alerts.alerts_flush()
    breaker_for(svc)._state_storage.opened_at = datetime.now(UTC) - timedelta(
        seconds=breaker_config(svc).reset_timeout + 1)  # the reset timeout has passed
    with pytest.raises(ServiceResponseError):
        client.get(service=svc, endpoint="/x")  # failed trial: open again, same episode → no new alert
    alerts.alerts_flush()

    trips = [b for b in _bodies(hook) if b["kind"] == "breaker_trip"]
    assert len(trips) == 1 and trips[0]["service"]["id"] == svc.pk


def test_each_transition_gives_at_most_one_alert_however_often_it_is_processed(make_service, hook):
    svc = make_service(status=HealthStatus.PASSING)
    _flip(svc, HealthStatus.CRITICAL, "down")
    change = StatusChange.objects.get(service=svc)
    # Two workers processing the same row (the row marked unprocessed again stands for the
    # second one getting there before the first one's commit): one alert, one delivery.
    outbox.outbox_process()
    StatusChange.objects.filter(pk=change.pk).update(processed=None)
    outbox.outbox_process()
    for _ in range(3):
        alerts.alerts_flush()
    assert [b["kind"] for b in _bodies(hook)] == ["critical"]
    assert Alert.objects.get().dedup_key == f"status-change:{change.pk}"

    _flip(svc, HealthStatus.PASSING)
    _flip(svc, HealthStatus.CRITICAL, "down again")
    _flip(svc, HealthStatus.WARNING)  # from critical to warning: recovered too
    alerts.alerts_flush()
    assert [b["kind"] for b in _bodies(hook)] == ["critical", "recovered", "critical", "recovered"]
    assert StatusChange.objects.filter(processed__isnull=True).count() == 0


def test_alerts_are_suppressed_while_the_service_is_in_maintenance(loopback, make_service, hook):
    server = loopback({"/x": Reply(500)})
    svc = make_service(url=server.url, status=HealthStatus.MAINTENANCE, breaker_fail_max=1)
    with pytest.raises(ServiceResponseError):
        ServiceClient(sleep=lambda s: None).get(service=svc, endpoint="/x")  # trips the breaker
    alerts.alert_raise(kind="critical", service=svc, message="down")
    alerts.alerts_flush()
    assert _bodies(hook) == [] and not Alert.objects.exists()


def test_directly_raised_alerts_are_one_per_kind_and_window(make_service, hook, settings):
    settings.ALERT_DEDUP_SECONDS = 3600
    for _ in range(3):
        alerts.alert_raise(kind="breaker_storage_down", service=None, message="store down")
    alerts.alerts_flush()
    assert [b["kind"] for b in _bodies(hook)] == ["breaker_storage_down"]


def test_a_failing_webhook_is_retried_with_backoff(make_service, hook):
    hook.routes["/hook"] = sequence(Reply(500), Reply(503), Reply(204))
    alerts.alert_raise(kind="critical", service=make_service(), message="down")
    alerts.alerts_flush()

    times = [h.at for h in hook.hits]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.05 and times[2] - times[1] >= 0.1  # 0.05 s, then doubled
    alert = Alert.objects.get()
    assert alert.delivered_at is not None and alert.attempts == 1 and alert.last_error == ""


def test_an_undeliverable_alert_is_sent_again_after_its_backoff(make_service, hook, settings):
    hook.routes["/hook"] = Reply(500)
    settings.ALERT_WEBHOOK_ATTEMPTS = 2
    alerts.alert_raise(kind="critical", service=make_service(), message="down")
    alerts.alerts_flush()
    alert = Alert.objects.get()
    assert alert.delivered_at is None and "HTTP 500" in alert.last_error
    assert alert.claimed_until > timezone.now()  # the next round waits for its backoff
    assert alerts.alerts_flush() == 0 and hook.count("/hook") == 2

    hook.routes["/hook"] = Reply(204)
    with time_machine.travel(alert.claimed_until + timedelta(seconds=1)):
        assert alerts.alerts_due() == [alert.pk]
        assert alerts.alerts_flush() == 1
    alert.refresh_from_db()
    assert alert.delivered_at is not None and alert.attempts == 2 and alert.last_error == ""


def test_a_channel_that_accepted_is_not_sent_again_when_another_failed(loopback, make_service, hook, settings):
    other = loopback({"/hook": Reply(500)})
    settings.ALERT_WEBHOOK_URLS = [hook.url + "/hook", other.url + "/hook"]
    settings.ALERT_WEBHOOK_ATTEMPTS = 1
    alerts.alert_raise(kind="critical", service=make_service(), message="down")
    alerts.alerts_flush()
    other.routes["/hook"] = Reply(204)
    alert = Alert.objects.get()
    with time_machine.travel(alert.claimed_until + timedelta(seconds=1)):
        alerts.alerts_flush()
    alert.refresh_from_db()
    assert alert.delivered_at is not None and alert.attempts == 2
    assert (hook.count("/hook"), other.count("/hook")) == (1, 2)


def test_the_sweep_sends_nothing_itself_and_starts_no_thread_for_side_effects(loopback, make_service, hook):
    hook.routes["/hook"] = Reply(hang=True)
    server = loopback({"/health": Reply(500)})
    for _ in range(3):
        make_service(url=server.url)

    health.health_sweep()
    assert Service.objects.filter(status="critical").count() == 3
    # The transitions wait as rows for the outbox task; nothing was sent, nothing is queued in
    # this process, and no alerts or breaker-event pool exists.
    assert StatusChange.objects.filter(processed__isnull=True).count() == 3
    assert hook.count("/hook") == 0
    names = {t.name.split("_")[0].rstrip("-0123456789") for t in threading.enumerate()}
    assert not names & {"alerts", "breaker-events"}
    assert not hasattr(alerts, "_executor")


def test_transition_metrics_are_counted_from_the_rows_once(make_service, hook):
    from berrys_portal import metrics

    def counted(kind: str, to: str) -> float:
        return metrics.TRANSITIONS.labels(kind, to)._value.get()

    def rounds(outcome: str) -> float:
        return metrics.ALERT_ROUNDS.labels("critical", outcome)._value.get()

    before = counted("status", "critical"), counted("breaker", "open"), rounds("delivered")
    svc = make_service(status=HealthStatus.PASSING)
    _flip(svc, HealthStatus.CRITICAL, "down")
    breaker_for(svc).force_open(reason="ops", actor="ops")
    for _ in range(2):  # a second pass finds nothing to count or send
        alerts.alerts_flush()
        outbox.outbox_process()
    after = counted("status", "critical"), counted("breaker", "open"), rounds("delivered")
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
