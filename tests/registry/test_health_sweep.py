"""The health sweep: verdicts, thresholds, parallel probing, claiming, TTL, deregistration, pruning."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from registry import health, health_expiry, health_loop, health_rules
from registry.breakers import breaker_for
from registry.models import HealthSnapshot, HealthStatus, Service, StatusChange
from tests.registry.loopback import Reply, flapping

# Runs on PostgreSQL + Redis and on the embedded default (SQLite); see tests/conftest.py.
pytestmark = pytest.mark.both_dbs

HEALTHY = Reply(200, {"status": "healthy", "database": True, "cache": True, "dependencies": True})
UNHEALTHY = Reply(200, {"status": "unhealthy", "database": False, "cache": True, "dependencies": True})


@pytest.mark.parametrize(
    ("http_status", "body", "latency", "slow", "error", "expected"),
    [
        (200, {"status": "healthy"}, 5, None, "", HealthStatus.PASSING),
        (204, None, 5, None, "", HealthStatus.PASSING),
        (200, "OK", 5, None, "", HealthStatus.PASSING),
        (200, {"status": "healthy"}, 900, 500, "", HealthStatus.WARNING),
        (200, {"status": "healthy", "database": True, "cache": False}, 5, None, "", HealthStatus.WARNING),
        (200, {"status": "healthy", "dependencies": {"redis": "down"}}, 5, None, "", HealthStatus.WARNING),
        (200, {"status": "unhealthy", "database": False}, 5, None, "", HealthStatus.CRITICAL),
        (500, {"status": "healthy"}, 5, None, "", HealthStatus.CRITICAL),
        (404, None, 5, None, "", HealthStatus.CRITICAL),
        (None, None, 2000, None, "timeout after 2 s", HealthStatus.CRITICAL),
    ],
)
def test_a_probe_verdict_follows_the_guide_body(http_status, body, latency, slow, error, expected):
    status, reason, details = health_rules.probe_verdict(
        http_status=http_status, body=body, latency_ms=latency, slow_threshold_ms=slow, error=error
    )
    assert status == expected
    assert (reason == "") == (expected == HealthStatus.PASSING)


def test_dependency_details_are_kept():
    _, reason, details = health_rules.probe_verdict(
        http_status=200, body={"status": "healthy", "database": False, "cache": True, "dependencies": True,
                               "timestamp": "t", "extra": 1},
        latency_ms=3, slow_threshold_ms=None,
    )
    assert details == {"status": "healthy", "database": False, "cache": True, "dependencies": True,
                       "timestamp": "t", "down": ["database"]}
    assert reason == "dependency down: database"


def test_a_sweep_probes_each_due_service_and_records_what_it_saw(loopback, make_service):
    server = loopback({"/ok": HEALTHY, "/sick": UNHEALTHY, "/err": Reply(500), "/slow": Reply(200, delay=0.3)})
    ok = make_service(url=server.url, health_path="/ok")
    sick = make_service(url=server.url, health_path="/sick")
    err = make_service(url=server.url, health_path="/err")
    slow = make_service(url=server.url, health_path="/slow", slow_threshold_ms=100)

    report = health.health_sweep()

    assert report.probed == 4 and report.changes == 4
    for svc, status in [(ok, "passing"), (sick, "critical"), (err, "critical"), (slow, "warning")]:
        svc.refresh_from_db()
        assert svc.status == status, svc.name  # first verdict taken at once
        assert svc.last_checked_at is not None and svc.next_check_at > timezone.now()
        snap = HealthSnapshot.objects.get(service=svc)
        assert snap.status == status and snap.latency_ms > 0
        change = StatusChange.objects.get(service=svc)
        assert (change.old_status, change.new_status, change.actor) == ("unknown", status, "health-sweep")
    assert HealthSnapshot.objects.get(service=sick).details["database"] is False
    assert HealthSnapshot.objects.get(service=err).http_status == 500


def test_services_not_due_in_maintenance_or_on_ttl_are_not_probed(loopback, make_service):
    server = loopback({"/h": HEALTHY})
    make_service(url=server.url, health_path="/h", next_check_at=timezone.now() + timedelta(minutes=1))
    make_service(url=server.url, health_path="/h", status=HealthStatus.MAINTENANCE)
    make_service(url=server.url, health_path="/h", ttl_seconds=60, last_heartbeat_at=timezone.now())

    assert health.health_sweep().probed == 0
    assert server.count("/h") == 0


def test_thresholds_delay_status_changes(loopback, make_service):
    server = loopback({"/h": flapping(HEALTHY, Reply(500), Reply(500), HEALTHY, HEALTHY)})
    svc = make_service(url=server.url, health_path="/h", failures_before_critical=2, successes_before_passing=2,
                       breaker_fail_max=50)
    seen = []
    for _ in range(5):
        Service.objects.filter(pk=svc.pk).update(next_check_at=None)
        # Critical opens the breaker (tested in test_health_breakers); close it so
        # every probe is an ordinary one and only the thresholds decide.
        breaker_for(svc).reset()
        health.health_sweep()
        svc.refresh_from_db()
        seen.append(svc.status)
    # 1st: first verdict at once; 2nd: one failure is not enough; 3rd: two are;
    # 4th: one success is not enough; 5th: two are.
    assert seen == ["passing", "passing", "critical", "critical", "passing"]
    assert list(StatusChange.objects.filter(service=svc).order_by("at").values_list("new_status", flat=True)) == [
        "passing", "critical", "passing"]


def test_hanging_services_do_not_delay_the_others(loopback, make_service, settings):
    # Two destinations: the prober bounds each (address, port) on its own (8 at once, 20/s), so
    # the hanging destination can only hold back its own probes. The start rate is lifted so
    # the 40 healthy probes (1.6 s at 20/s) do not eat the time measured here; the rate
    # limit has its own tests in test_prober.py. Polling, not a wall-clock bound: the healthy
    # results must be written while the hanging probes are still out (they hang for 8 s).
    settings.HEALTH_PROBE_PER_DESTINATION_RATE = 1000.0
    stuck, server = loopback({"/hang": Reply(hang=True)}), loopback({"/ok": HEALTHY})
    hanging = [make_service(url=stuck.url, health_path="/hang", check_timeout_seconds=8.0) for _ in range(8)]
    healthy = [make_service(url=server.url, health_path="/ok") for _ in range(40)]
    reports = []

    def sweep():
        try:
            reports.append(health_loop.health_sweep_run(batch_size=10, max_in_flight=30, max_queued=30))
        finally:
            connections.close_all()

    thread = threading.Thread(target=sweep)
    thread.start()
    deadline = time.monotonic() + 60
    passing = Service.objects.filter(pk__in=[s.pk for s in healthy], status="passing")
    while time.monotonic() < deadline and passing.count() < 40 and thread.is_alive():
        time.sleep(0.1)
    written_while_hanging = passing.count() == 40 and stuck.count("/hang") == 8 and thread.is_alive()
    thread.join(60)

    assert written_while_hanging  # the hanging probes held back nobody else
    assert reports and reports[0].probed == 48
    hung = Service.objects.filter(pk__in=[s.pk for s in hanging])
    assert all(s.status == "critical" and "timed out" in s.status_reason for s in hung)


def test_two_sweepers_share_the_due_services_without_overlap(loopback, make_service):
    routes = {f"/h{i}": Reply(200, {"status": "healthy"}, delay=0.01) for i in range(120)}
    server = loopback(routes)
    for i in range(120):
        make_service(url=server.url, health_path=f"/h{i}")
    reports = []

    def sweeper():
        try:
            reports.append(health_loop.health_sweep_run(batch_size=10, max_in_flight=10, max_queued=20))
        finally:
            connections.close_all()  # this thread's claim connection

    threads = [threading.Thread(target=sweeper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert sorted(server.count(f"/h{i}") for i in range(120)) == [1] * 120
    assert sum(r.claimed for r in reports) == 120
    assert all(r.claimed > 0 for r in reports)  # both really took a share
    assert HealthSnapshot.objects.count() == 120


def test_results_go_to_the_writer_while_the_sweep_is_still_claiming(loopback, make_service, monkeypatch):
    # Before, the sweep claimed every due service before taking back a single result, so
    # the first write waited for the last claim (2.6 s into a 10,000-service sweep).
    server = loopback({"/h": HEALTHY})
    for i in range(12):
        make_service(url=server.url, health_path="/h", name=f"overlap-{i}")
    events = []
    claim, write = health_loop._claim, health_loop.outcomes_write

    def slow_claim(**kw):
        events.append("claim")
        batch = claim(**kw)
        time.sleep(0.3)  # a claim on a busy database; its probes come back meanwhile
        return batch

    def recorded_write(outcomes, report, **kw):
        events.append("write")
        return write(outcomes, report, **kw)

    monkeypatch.setattr(health_loop, "_claim", slow_claim)
    monkeypatch.setattr(health_loop, "outcomes_write", recorded_write)
    report = health_loop.health_sweep_run(batch_size=2)
    assert report.claimed == report.probed == 12
    assert events.index("write") < len(events) - 1 - events[::-1].index("claim")  # a write before the last claim
    assert HealthSnapshot.objects.count() == 12


def test_only_one_sweep_runs_at_a_time(loopback, make_service):
    server = loopback({"/h": HEALTHY})
    make_service(url=server.url, health_path="/h")
    cache.add(health.SWEEP_LOCK_KEY, "someone-else", timeout=30)
    try:
        report = health.health_sweep()
        assert report.skipped_locked and server.count("/h") == 0
    finally:
        cache.delete(health.SWEEP_LOCK_KEY)
    assert health.health_sweep().probed == 1


def test_a_ttl_service_turns_critical_when_its_heartbeat_is_older_than_the_ttl(make_service):
    svc = make_service(ttl_seconds=30, last_heartbeat_at=timezone.now(), status=HealthStatus.PASSING)
    with time_machine.travel(timezone.now() + timedelta(seconds=20)):
        health.health_sweep()
    svc.refresh_from_db()
    assert svc.status == "passing"

    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        report = health.health_sweep()
    svc.refresh_from_db()
    assert report.ttl_expired == 1
    assert svc.status == "critical" and svc.status_reason.startswith("TTL expired")
    assert StatusChange.objects.filter(service=svc, new_status="critical", actor="health-ttl").count() == 1


def test_ttl_expiry_compares_each_services_own_ttl_in_the_database_to_the_millisecond(make_service):
    # One query on both databases (SecondsAfter): each row's heartbeat plus its own TTL.
    seen = timezone.now().replace(microsecond=250_000)
    short = make_service(ttl_seconds=10, last_heartbeat_at=seen, status=HealthStatus.PASSING)
    long = make_service(ttl_seconds=100, last_heartbeat_at=seen, status=HealthStatus.PASSING)
    assert health_expiry.health_ttl_expire(now=seen + timedelta(seconds=9.9)) == 0
    assert health_expiry.health_ttl_expire(now=seen + timedelta(seconds=10.1)) == 1
    short.refresh_from_db(), long.refresh_from_db()
    assert (short.status, long.status) == ("critical", "passing")
    assert health_expiry.health_ttl_expire(now=seen + timedelta(seconds=99.9)) == 0
    assert health_expiry.health_ttl_expire(now=seen + timedelta(seconds=100.1)) == 1


def test_a_service_critical_longer_than_deregister_after_is_deregistered_and_recorded(loopback, make_service):
    server = loopback({"/h": Reply(500)})
    svc = make_service(url=server.url, health_path="/h", deregister_after_seconds=300, name="doomed")
    keeper = make_service(url=server.url, health_path="/h", name="kept")  # never deregistered
    health.health_sweep()
    svc.refresh_from_db()
    assert svc.status == "critical" and svc.critical_since is not None

    with time_machine.travel(timezone.now() + timedelta(seconds=200)):
        assert health_expiry.health_deregister_expired() == 0
    with time_machine.travel(timezone.now() + timedelta(seconds=301)):
        assert health_expiry.health_deregister_expired() == 1

    assert not Service.objects.filter(pk=svc.pk).exists() and Service.objects.filter(pk=keeper.pk).exists()
    record = StatusChange.objects.get(new_status=StatusChange.DEREGISTERED)
    assert record.service_name == "doomed" and record.service is None and "critical for" in record.reason
    assert record.actor == "health-deregister"


def test_snapshots_older_than_the_retention_are_pruned_in_batches(make_service, settings):
    settings.HEALTH_SNAPSHOT_RETENTION_DAYS = 7
    svc = make_service()
    now = timezone.now()
    HealthSnapshot.objects.bulk_create(
        [HealthSnapshot(service=svc, checked_at=now - timedelta(days=8, minutes=i), status="passing")
         for i in range(25)]
        + [HealthSnapshot(service=svc, checked_at=now - timedelta(days=6), status="passing")]
    )
    assert health_expiry.health_snapshots_prune(batch_size=10) == 25
    assert HealthSnapshot.objects.count() == 1


def test_check_health_command_prints_a_table(loopback, make_service, capsys):
    server = loopback({"/h": HEALTHY})
    svc = make_service(url=server.url, health_path="/h", name="alpha", next_check_at=timezone.now() + timedelta(hours=1))
    call_command("check_health", "--service", str(svc.pk))
    out = capsys.readouterr().out
    assert "alpha" in out and "passing" in out and "probed 1" in out
    call_command("check_health", "--all")
    assert server.count("/h") == 2


def test_setup_periodic_tasks_creates_the_schedule_rows_idempotently(transactional_db):
    from django_celery_beat.models import PeriodicTask

    call_command("setup_periodic_tasks")
    call_command("setup_periodic_tasks")
    rows = {t.task: t for t in PeriodicTask.objects.all()}
    assert {"registry.health_sweep", "registry.health_prune", "workflows.reconcile"} <= set(rows)
    assert PeriodicTask.objects.filter(task="registry.health_sweep").count() == 1
    assert rows["registry.health_sweep"].interval.every == 5 and rows["registry.health_sweep"].enabled


@pytest.mark.slow
def test_the_beat_task_sweeps_through_a_real_celery_worker(loopback, make_service, tmp_path):
    from registry.tasks import health_sweep_task
    from tests.celery_worker import CeleryWorker
    from tests.registry.health_fixtures import subprocess_env

    server = loopback({"/h": HEALTHY})
    svc = make_service(url=server.url, health_path="/h")
    worker = CeleryWorker(settings.HEALTH_QUEUE, subprocess_env(), tmp_path / "worker.log", pool="solo",
                          concurrency=1)
    try:
        worker.start()
        health_sweep_task.delay()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.count("/h") == 0:
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Service.objects.get(pk=svc.pk).status != "passing":
            time.sleep(0.1)
    finally:
        worker.stop()
    assert server.count("/h") == 1
    assert Service.objects.get(pk=svc.pk).status == "passing"
    assert HealthSnapshot.objects.filter(service=svc).count() == 1


def test_a_heartbeat_after_ttl_expiry_closes_the_breaker_the_expiry_opened(loopback, make_service):
    from registry.breakers import breaker_for
    from registry.client import service_client
    from registry.services import service_heartbeat

    server = loopback({"/work": Reply(200, {"ok": True})})
    svc = make_service(url=server.url, ttl_seconds=30, last_heartbeat_at=timezone.now(),
                       status=HealthStatus.PASSING)
    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        health.health_sweep()
    assert breaker_for(svc).snapshot().state == "open"  # critical opened it at once

    service_heartbeat(service=svc.pk, key=None)
    svc.refresh_from_db()
    assert svc.status == "passing"
    assert breaker_for(svc).snapshot().state == "closed"  # no wait for the reset timeout
    assert service_client.get(service="PLANNING_SYSTEM", endpoint="/work").status == 200


def test_a_heartbeat_leaves_an_operators_forced_open_breaker_open(make_service):
    from registry.breakers import breaker_for
    from registry.services import service_heartbeat

    svc = make_service(ttl_seconds=30, last_heartbeat_at=timezone.now(), status=HealthStatus.PASSING)
    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        health.health_sweep()
    breaker_for(svc).force_open(reason="investigating", actor="ops")
    service_heartbeat(service=svc.pk, key=None)
    assert breaker_for(svc).snapshot().state == "open"
