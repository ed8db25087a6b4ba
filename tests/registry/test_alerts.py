"""Alerts: webhook and e-mail on critical / recovery / breaker trip; de-duplicated,
retried with backoff, never blocking the sweep, suppressed during maintenance."""

from __future__ import annotations

import time

import pytest
from django.core import mail

from berrys_portal.errors import ServiceResponseError
from registry import alerts, health
from registry.client import ServiceClient
from registry.models import Alert, HealthStatus, Service
from tests.registry.loopback import Reply, sequence


@pytest.fixture
def hook(loopback, settings):
    server = loopback({"/hook": Reply(204)})
    settings.ALERT_WEBHOOK_URLS = [server.url + "/hook"]
    settings.ALERT_WEBHOOK_BACKOFF_SECONDS = 0.05
    settings.ADMINS = [("ops", "ops@example.com")]
    return server


def _bodies(server):
    return [h.body for h in server.hits if h.path == "/hook"]


def _wait_alerts():
    alerts.alerts_flush()


def test_a_service_turning_critical_and_recovering_sends_webhooks_and_email(loopback, make_service, hook):
    server = loopback({"/health": Reply(500)})
    svc = make_service(url=server.url, name="planner-1", successes_before_passing=1)
    health.health_sweep()
    _wait_alerts()

    server.routes["/health"] = Reply(200, {"status": "healthy"})
    health.health_check_now(service_ids=[svc.pk])  # the operator's check: the trial, passing
    _wait_alerts()

    kinds = [b["kind"] for b in _bodies(hook)]
    assert "critical" in kinds and "recovered" in kinds
    critical = next(b for b in _bodies(hook) if b["kind"] == "critical")
    assert critical["service"]["name"] == "planner-1" and "HTTP 500" in critical["message"]
    assert any("planner-1" in m.subject and m.to == ["ops@example.com"] for m in mail.outbox)
    assert Alert.objects.filter(service=svc, delivered_at__isnull=False).count() == len(kinds)


def test_a_breaker_trip_sends_one_alert_even_when_it_reopens(loopback, make_service, hook):
    server = loopback({"/x": Reply(500)})
    svc = make_service(url=server.url, breaker_fail_max=1, breaker_reset_timeout_seconds=0.1)
    client = ServiceClient(sleep=lambda s: None)
    with pytest.raises(ServiceResponseError):
        client.get(service=svc, endpoint="/x")
    _wait_alerts()
    time.sleep(0.15)
    with pytest.raises(ServiceResponseError):
        client.get(service=svc, endpoint="/x")  # failed trial: open again, same state → no new alert
    _wait_alerts()

    trips = [b for b in _bodies(hook) if b["kind"] == "breaker_trip"]
    assert len(trips) == 1 and trips[0]["service"]["id"] == svc.pk


def test_alerts_are_deduplicated_until_the_state_changes(make_service, hook):
    svc = make_service()
    for _ in range(3):
        alerts.alert_raise(kind="critical", service=svc, message="down")
        _wait_alerts()
    assert [b["kind"] for b in _bodies(hook)] == ["critical"]

    alerts.alert_raise(kind="recovered", service=svc, message="up")
    _wait_alerts()
    alerts.alert_raise(kind="critical", service=svc, message="down again")
    _wait_alerts()
    assert [b["kind"] for b in _bodies(hook)] == ["critical", "recovered", "critical"]


def test_alerts_are_suppressed_while_the_service_is_in_maintenance(make_service, hook):
    svc = make_service(status=HealthStatus.MAINTENANCE)
    alerts.alert_raise(kind="critical", service=svc, message="down")
    _wait_alerts()
    assert _bodies(hook) == [] and not Alert.objects.exists()


def test_a_failing_webhook_is_retried_with_backoff(make_service, hook):
    hook.routes["/hook"] = sequence(Reply(500), Reply(503), Reply(204))
    svc = make_service()
    alerts.alert_raise(kind="critical", service=svc, message="down")
    _wait_alerts()

    times = [h.at for h in hook.hits]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.05 and times[2] - times[1] >= 0.1  # 0.05 s, then doubled
    alert = Alert.objects.get()
    assert alert.delivered_at is not None and alert.attempts == 1 and alert.last_error == ""


def test_an_undeliverable_alert_keeps_its_error_for_redelivery(make_service, hook, settings):
    hook.routes["/hook"] = Reply(500)
    settings.ALERT_WEBHOOK_ATTEMPTS = 2
    alerts.alert_raise(kind="critical", service=make_service(), message="down")
    _wait_alerts()
    alert = Alert.objects.get()
    assert alert.delivered_at is None and "HTTP 500" in alert.last_error

    hook.routes["/hook"] = Reply(204)
    assert alerts.alerts_redeliver(older_than_seconds=0) == 1
    _wait_alerts()
    alert.refresh_from_db()
    assert alert.delivered_at is not None and alert.attempts == 2


def test_a_hanging_webhook_never_blocks_the_sweep(loopback, make_service, hook, settings):
    hook.routes["/hook"] = Reply(hang=True)
    settings.ALERT_WEBHOOK_TIMEOUT_SECONDS = 2.0
    settings.ALERT_WEBHOOK_ATTEMPTS = 1
    server = loopback({"/health": Reply(500)})
    for _ in range(3):
        make_service(url=server.url)

    started = time.monotonic()
    health.health_sweep()
    assert time.monotonic() - started < 1.0
    assert Service.objects.filter(status="critical").count() == 3
