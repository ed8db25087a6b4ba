"""Retention: rows past their table's retention are pruned in bounded batches; active runs never are.

The clock is moved with time-machine: rows are written "now", then the clock jumps past the
retention and the beat task's function runs.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from berrys_portal.retention import retention_prune
from berrys_portal.tasks import retention_prune_task
from registry.models import Alert, BreakerEvent, HealthSnapshot, Service, StatusChange
from tests.dashboard.factories import failed_run
from workflows.models import RunEvent, RunStatus, StepAttempt, StepRun, WorkflowRun

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _run(status: str) -> WorkflowRun:
    """A three-step run with attempts and an event, in ``status`` (finished ones finished now)."""
    run = failed_run(minutes_ago=0)
    RunEvent.objects.create(run=run, kind=RunEvent.Kind.STARTED, actor="test")
    finished = timezone.now() if status in ("succeeded", "failed", "cancelled") else None
    WorkflowRun.objects.filter(pk=run.pk).update(status=status, finished_at=finished)
    return run


def _history(service: Service, at: datetime) -> None:
    HealthSnapshot.objects.create(service=service, checked_at=at, status="passing")
    StatusChange.objects.create(service=service, service_name=service.name, service_type=service.type,
                                old_status="unknown", new_status="passing", at=at)
    BreakerEvent.objects.create(service=service, service_name=service.name, old_state="closed",
                                new_state="open", at=at)
    Alert.objects.create(service=service, service_name=service.name, kind="critical", message="down",
                         created_at=at, delivered_at=at)


@pytest.fixture
def retention(settings):
    settings.WORKFLOW_RUN_RETENTION_DAYS = 30
    settings.HEALTH_SNAPSHOT_RETENTION_DAYS = 7
    settings.STATUS_CHANGE_RETENTION_DAYS = 60
    settings.BREAKER_EVENT_RETENTION_DAYS = 60
    settings.ALERT_RETENTION_DAYS = 60
    return settings


@pytest.mark.both_dbs
@pytest.mark.django_db
def test_finished_runs_past_retention_go_with_their_steps_attempts_and_events_and_active_runs_stay(retention):
    with time_machine.travel(T0, tick=False):
        old = [_run(s) for s in ("succeeded", "failed", "cancelled")]
        active = [_run(s) for s in ("running", "waiting", "pending")]
    with time_machine.travel(T0 + timedelta(days=20), tick=False):
        recent = _run("succeeded")
    with time_machine.travel(T0 + timedelta(days=31), tick=False):
        deleted = retention_prune()
    assert deleted["runs"] == 3
    remaining = set(WorkflowRun.objects.values_list("pk", flat=True))
    assert remaining == {r.pk for r in [*active, recent]}
    assert not WorkflowRun.objects.filter(pk__in=[r.pk for r in old]).exists()
    # Children went with their runs (nothing orphaned), and the others' are intact.
    assert set(StepRun.objects.values_list("run_id", flat=True)) == remaining
    assert set(RunEvent.objects.values_list("run_id", flat=True)) == remaining
    assert StepAttempt.objects.count() == 5 * len(remaining)
    # Running for months is not "old": an active run is never pruned, whatever its age.
    with time_machine.travel(T0 + timedelta(days=400), tick=False):
        assert retention_prune()["runs"] == 1  # only `recent`, finished by now long ago
    assert set(WorkflowRun.objects.values_list("status", flat=True)) == {
        RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PENDING}


@pytest.mark.both_dbs
@pytest.mark.django_db
def test_history_tables_are_pruned_by_age_keeping_each_services_latest_status_change(retention):
    keeper = Service.objects.create(name="quiet", type="PLANNING_SYSTEM", url="http://127.0.0.1:9401")
    busy = Service.objects.create(name="busy", type="PLANNING_SYSTEM", url="http://127.0.0.1:9402")
    _history(keeper, T0)
    _history(busy, T0)
    _history(busy, T0 + timedelta(days=10))
    with time_machine.travel(T0 + timedelta(days=61), tick=False):
        deleted = retention_prune()
    assert deleted == {"runs": 0, "snapshots": 3, "status_changes": 1, "breaker_events": 2, "alerts": 2}
    assert list(HealthSnapshot.objects.all()) == []
    # The quiet service's only change (its status ever since) is kept although it is 61 days old.
    assert sorted((c.service.name, c.at) for c in StatusChange.objects.all()) == [
        ("busy", T0 + timedelta(days=10)), ("quiet", T0)]
    assert list(BreakerEvent.objects.values_list("at", flat=True)) == [T0 + timedelta(days=10)]
    assert list(Alert.objects.values_list("created_at", flat=True)) == [T0 + timedelta(days=10)]


@pytest.mark.both_dbs
@pytest.mark.django_db
def test_pruning_deletes_in_bounded_batches_one_short_statement_per_batch(retention):
    with time_machine.travel(T0, tick=False):
        for _ in range(7):
            _run("succeeded")
        svc = Service.objects.create(name="s", type="PLANNING_SYSTEM", url="http://127.0.0.1:9403")
        HealthSnapshot.objects.bulk_create(
            [HealthSnapshot(service=svc, checked_at=T0, status="passing") for _ in range(11)])
    with time_machine.travel(T0 + timedelta(days=31), tick=False), CaptureQueriesContext(connection) as ctx:
        deleted = retention_prune(batch_size=3)
    assert deleted["runs"] == 7 and deleted["snapshots"] == 11
    run_deletes = [q["sql"] for q in ctx.captured_queries
                   if q["sql"].startswith('DELETE FROM "workflows_workflowrun"')]
    snapshot_deletes = [q["sql"] for q in ctx.captured_queries
                        if q["sql"].startswith('DELETE FROM "registry_healthsnapshot"')]
    assert len(run_deletes) == math.ceil(7 / 3) and len(snapshot_deletes) == math.ceil(11 / 3)
    # Each DELETE names its ids (at most a batch), never an open-ended age condition.
    assert all(" IN (" in sql and sql.count("'") <= 2 * 3 for sql in run_deletes)
    assert WorkflowRun.objects.count() == 0 and HealthSnapshot.objects.count() == 0


@pytest.mark.both_dbs
@pytest.mark.django_db
def test_the_beat_task_prunes_and_setup_periodic_tasks_installs_it(retention):
    from django_celery_beat.models import PeriodicTask

    with time_machine.travel(T0, tick=False):
        _run("failed")
    with time_machine.travel(T0 + timedelta(days=31), tick=False):
        assert retention_prune_task()["runs"] == 1
    call_command("setup_periodic_tasks", stdout=open(os.devnull, "w"))
    row = PeriodicTask.objects.get(task="portal.retention_prune")
    assert row.enabled and row.interval.every == retention.RETENTION_PRUNE_EVERY_SECONDS


@pytest.mark.both_dbs
@pytest.mark.django_db
def test_the_admin_shows_the_retention_in_force(admin_client, retention):
    retention.WORKFLOW_RUN_RETENTION_DAYS = 12
    index = admin_client.get("/admin/").content.decode()
    assert "Retention in force" in index and "<td>12 days</td>" in index
    assert "WORKFLOW_RUN_RETENTION_DAYS" in index and "ALERT_RETENTION_DAYS" in index
    runs = admin_client.get("/admin/workflows/workflowrun/").content.decode()
    assert 'id="bp-retention"' in runs and "deleted 12 days after they finish" in runs
    services = admin_client.get("/admin/registry/service/").content.decode()
    assert "health snapshots 7 d" in services and "alerts 60 d" in services


SQLITE_SCRIPT = textwrap.dedent("""
    from datetime import timedelta
    import django
    django.setup()
    import time_machine
    from django.core.management import call_command
    from django.utils import timezone
    from berrys_portal.retention import retention_prune
    from registry.models import HealthSnapshot, Service
    from workflows.models import StepRun, WorkflowRun

    call_command("migrate", verbosity=0)
    t0 = timezone.now()
    with time_machine.travel(t0, tick=False):
        svc = Service.objects.create(name="s", type="PLANNING_SYSTEM", url="http://127.0.0.1:9404")
        for status in ("succeeded", "failed", "running"):
            run = WorkflowRun.objects.create(workflow="w", version=1, status=status,
                                             finished_at=None if status == "running" else t0)
            StepRun.objects.create(run=run, index=0, name="a")
        HealthSnapshot.objects.bulk_create(
            [HealthSnapshot(service=svc, checked_at=t0, status="passing") for _ in range(5)])
    with time_machine.travel(t0 + timedelta(days=365), tick=False):
        deleted = retention_prune(batch_size=2)
    print(deleted["runs"], deleted["snapshots"], WorkflowRun.objects.get().status, StepRun.objects.count())
""")


def test_pruning_works_on_sqlite_too(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'portal.sqlite3'}", PORTAL_VAR_DIR=str(tmp_path / "var"),
               DJANGO_SETTINGS_MODULE="berrys_portal.settings", DJANGO_ENV="development")
    result = subprocess.run([sys.executable, "-c", SQLITE_SCRIPT], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "2 5 running 1"
