"""Health and breakers linked: critical opens the breaker, probes are withheld while it is
open, the first probe after the reset timeout is the trial, and "check now" probes through it."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from berrys_portal.errors import CircuitOpenError
from registry import health
from registry.breakers import breaker_for
from registry.client import ServiceClient
from registry.models import BreakerEvent, HealthStatus, Service
from tests.registry.loopback import Reply

HEALTHY = Reply(200, {"status": "healthy"})
# Every test here runs once per shared breaker store (Redis, the database).
pytestmark = [pytest.mark.both_dbs, pytest.mark.usefixtures("breaker_store")]


def _sweep_now():
    Service.objects.update(next_check_at=None)
    return health.health_sweep()


def test_a_service_turning_critical_opens_its_breaker_at_once(loopback, make_service):
    server = loopback({"/health": Reply(500), "/work": Reply(200)})
    svc = make_service(url=server.url, breaker_fail_max=50)

    health.health_sweep()
    svc.refresh_from_db()
    assert svc.status == "critical"
    assert breaker_for(svc).snapshot().state == "open"  # not after 50 failures: now

    with pytest.raises(CircuitOpenError):
        ServiceClient().post(service=svc, endpoint="/work", data={})
    assert server.count("/work") == 0
    assert "health critical" in BreakerEvent.objects.get(service=svc, new_state="open").last_error


def test_probes_are_withheld_while_the_breaker_is_open(loopback, make_service):
    server = loopback({"/health": HEALTHY})
    svc = make_service(url=server.url, status=HealthStatus.PASSING, last_checked_at=timezone.now())
    breaker_for(svc).force_open(reason="tripped by workflow calls")

    report = _sweep_now()
    svc.refresh_from_db()

    assert server.count("/health") == 0 and report.withheld == 1
    assert svc.status == "critical" and svc.status_reason == "breaker open"
    assert svc.snapshots.get().details == {"withheld": True}


def test_the_first_probe_after_the_reset_timeout_is_the_trial_that_closes_the_breaker(loopback, make_service):
    server = loopback({"/health": Reply(500)})
    svc = make_service(url=server.url, breaker_reset_timeout_seconds=30)
    health.health_sweep()  # critical → breaker open
    assert breaker_for(svc).snapshot().state == "open"
    server.routes["/health"] = HEALTHY

    with time_machine.travel(timezone.now() + timedelta(seconds=10)):
        _sweep_now()
    assert server.count("/health") == 1  # still withheld

    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        report = _sweep_now()
    svc.refresh_from_db()
    assert report.trials == 1 and server.count("/health") == 2
    assert breaker_for(svc).snapshot().state == "closed"
    assert svc.status == "passing"
    assert list(BreakerEvent.objects.filter(service=svc).order_by("at").values_list("new_state", flat=True)) == [
        "open", "half-open", "closed"]


def test_a_failing_trial_probe_opens_the_breaker_again(loopback, make_service):
    server = loopback({"/health": Reply(500)})
    svc = make_service(url=server.url, breaker_reset_timeout_seconds=30)
    health.health_sweep()

    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        report = _sweep_now()
    svc.refresh_from_db()
    assert report.trials == 1 and server.count("/health") == 2
    assert breaker_for(svc).snapshot().state == "open"
    assert svc.status == "critical" and svc.status_reason.startswith("breaker trial failed")


def test_the_sweep_comes_back_when_the_reset_timeout_ends(loopback, make_service):
    server = loopback({"/health": Reply(500)})
    svc = make_service(url=server.url, breaker_reset_timeout_seconds=30, check_interval_seconds=300)
    health.health_sweep()
    svc.refresh_from_db()
    # Next check at the end of the reset timeout, not a whole interval later.
    assert timedelta(seconds=25) < svc.next_check_at - timezone.now() < timedelta(seconds=60)


def test_check_now_probes_through_an_open_breaker_as_the_trial(loopback, make_service):
    server = loopback({"/health": HEALTHY})
    svc = make_service(url=server.url, status=HealthStatus.CRITICAL, last_checked_at=timezone.now())
    breaker_for(svc).force_open(reason="operator")

    report = health.health_check_now(service_ids=[svc.pk])
    svc.refresh_from_db()
    assert report.trials == 1 and server.count("/health") == 1
    assert breaker_for(svc).snapshot().state == "closed" and svc.status == "passing"


def test_failed_probes_count_toward_tripping_the_breaker(loopback, make_service):
    server = loopback({"/health": Reply(503)})
    svc = make_service(url=server.url, status=HealthStatus.PASSING, last_checked_at=timezone.now(),
                       failures_before_critical=10, breaker_fail_max=3)
    for _ in range(3):
        _sweep_now()
        svc.refresh_from_db()
        assert svc.status == "passing"  # the thresholds keep the status...
    assert breaker_for(svc).snapshot().state == "open"  # ...but the breaker counted the failures


def test_a_probe_whose_status_write_is_skipped_leaves_the_breaker_alone(make_service):
    """An operator switched the service to maintenance while its probe was out: the guarded
    UPDATE skips the row, and the breaker must not be opened by a verdict that was not written."""
    from registry.health_effects import plan_probes
    from registry.health_results import Outcome, SweepReport, outcomes_write

    svc = make_service(url="http://127.0.0.1:9", status=HealthStatus.PASSING, breaker_fail_max=50,
                       failures_before_critical=1)
    [plan] = plan_probes([svc], force=False)  # claimed while passing
    Service.objects.filter(pk=svc.pk).update(status=HealthStatus.MAINTENANCE)  # the operator, meanwhile
    failed = Outcome(plan=plan, checked_at=timezone.now(), error="connection refused")

    outcomes_write([failed], SweepReport(), keep_rows=False)

    svc.refresh_from_db()
    assert svc.status == HealthStatus.MAINTENANCE
    assert breaker_for(svc).snapshot().state == "closed"
    assert not BreakerEvent.objects.filter(service=svc).exists()

    # The same probe result written over the status it was judged against opens it.
    Service.objects.filter(pk=svc.pk).update(status=HealthStatus.PASSING)
    svc.refresh_from_db()
    [plan] = plan_probes([svc], force=False)
    outcomes_write([Outcome(plan=plan, checked_at=timezone.now(), error="connection refused")],
                   SweepReport(), keep_rows=False)
    svc.refresh_from_db()
    assert svc.status == HealthStatus.CRITICAL
    assert breaker_for(svc).snapshot().state == "open"
