"""/metrics: Prometheus text format, summed across processes, protected by key or network."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from berrys_portal import metrics
from dashboard import metrics as state_metrics
from registry.models import BreakerEvent, HealthStatus, Service

pytestmark = pytest.mark.django_db


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_it_refuses_a_scrape_without_a_key_from_an_unlisted_network(anon_client, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    response = Client().get("/metrics")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_it_refuses_a_key_without_the_read_scope_and_a_bad_key():
    from tests.conftest import _client_with

    no_read = _client_with(["register"], "no-read")
    assert no_read.get("/metrics").status_code == 403
    assert Client(HTTP_AUTHORIZATION="Token bp_nope").get("/metrics").status_code == 401


def test_a_read_key_may_scrape(read_client):
    assert read_client.get("/metrics").status_code == 200


def test_an_allow_listed_network_may_scrape_without_a_key(settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.1.0.0/16", "127.0.0.0/8"]
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="10.2.0.1").get("/metrics").status_code == 401
    # X-Forwarded-For is not trusted.
    assert Client(REMOTE_ADDR="10.2.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1").get("/metrics").status_code == 401


def test_service_status_and_breaker_state_are_read_at_scrape_time(read_client):
    up = Service.objects.create(name="plan-1", type="PLANNING_SYSTEM", url="http://127.0.0.1:1",
                                status=HealthStatus.PASSING)
    down = Service.objects.create(name="coord-1", type="PROJECT_COORDINATOR", url="http://127.0.0.1:2",
                                  status=HealthStatus.CRITICAL)
    now = timezone.now()
    BreakerEvent.objects.create(service=down, service_name=down.name, old_state="closed",
                                new_state="open", at=now - timedelta(seconds=5))
    samples = scrape(read_client)
    assert value(samples, "berrys_service_status", service="plan-1", type="PLANNING_SYSTEM", status="passing") == 1
    assert value(samples, "berrys_service_status", service="plan-1", type="PLANNING_SYSTEM", status="critical") == 0
    assert value(samples, "berrys_service_status", service="coord-1", type="PROJECT_COORDINATOR", status="critical") == 1
    assert value(samples, "berrys_breaker_state", service="plan-1", type="PLANNING_SYSTEM", state="closed") == 1
    # The live breaker store is consulted when the health app provides one; without
    # any transition there the latest BreakerEvent decides.
    states = state_metrics._breaker_states([up.id, down.id])
    assert states.get(up.id, "closed") == "closed"

    Service.objects.filter(pk=up.pk).update(status=HealthStatus.WARNING)
    samples = scrape(read_client)
    assert value(samples, "berrys_service_status", service="plan-1", type="PLANNING_SYSTEM", status="warning") == 1
    assert value(samples, "berrys_service_status", service="plan-1", type="PLANNING_SYSTEM", status="passing") == 0


def test_events_recorded_in_other_processes_are_summed_in_one_scrape(read_client):
    before = scrape(read_client)
    base_count = value(before, "berrys_health_check_latency_seconds_count",
                       service="mp-svc", type="TOOL_INTEGRATION", outcome="passing") or 0
    base_requeue = value(before, "berrys_reconciler_requeues_total", reason="lease_expired") or 0

    metrics.observe_probe(service="mp-svc", service_type="TOOL_INTEGRATION",
                          latency_seconds=0.02, outcome="passing")
    code = (
        "import django; django.setup()\n"
        "from berrys_portal import metrics\n"
        "metrics.observe_probe(service='mp-svc', service_type='TOOL_INTEGRATION', latency_seconds=0.2, outcome='passing')\n"
        "metrics.observe_probe(service='mp-svc', service_type='TOOL_INTEGRATION', latency_seconds=3.0, outcome='passing')\n"
        "metrics.record_requeue(reason='lease_expired', count=2)\n"
    )
    for _ in range(2):  # two separate processes, like two Celery pool children
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "DJANGO_SETTINGS_MODULE": "berrys_portal.settings_test"})
        assert proc.returncode == 0, proc.stderr

    after = scrape(read_client)
    labels = {"service": "mp-svc", "type": "TOOL_INTEGRATION", "outcome": "passing"}
    assert value(after, "berrys_health_check_latency_seconds_count", **labels) == base_count + 5
    assert value(after, "berrys_health_check_latency_seconds_bucket", le="0.025", **labels) >= 1
    assert value(after, "berrys_health_check_latency_seconds_bucket", le="2.5", **labels) - \
        value(after, "berrys_health_check_latency_seconds_bucket", le="0.025", **labels) == 2
    assert value(after, "berrys_reconciler_requeues_total", reason="lease_expired") == base_requeue + 4


def test_a_dead_process_keeps_its_counters_in_the_sum(read_client):
    code = (
        "import django, os; django.setup()\n"
        "from berrys_portal import metrics\n"
        "metrics.record_run_finished(workflow='dead_proc_wf', status='succeeded')\n"
        "print(os.getpid())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "berrys_portal.settings_test"})
    assert proc.returncode == 0, proc.stderr
    metrics.process_dead(int(proc.stdout.strip()))
    samples = scrape(read_client)
    assert value(samples, "berrys_workflow_runs_finished_total", workflow="dead_proc_wf", status="succeeded") == 1


def test_step_durations_are_a_histogram_by_workflow_step_and_outcome(read_client):
    metrics.observe_step(workflow="wf_hist", step="plan", duration_seconds=0.3, outcome="retry")
    metrics.observe_step(workflow="wf_hist", step="plan", duration_seconds=0.04, outcome="succeeded")
    samples = scrape(read_client)
    assert value(samples, "berrys_workflow_step_duration_seconds_count",
                 workflow="wf_hist", step="plan", outcome="retry") == 1
    assert value(samples, "berrys_workflow_step_duration_seconds_sum",
                 workflow="wf_hist", step="plan", outcome="succeeded") == pytest.approx(0.04)


def test_a_health_check_records_its_latency_in_the_histogram(read_client, stub):
    from registry.health import health_check_now

    server = stub()
    server.routes[("GET", "/health")] = lambda body: (200, {"status": "ok"})
    svc = server.register("TOOL_INTEGRATION", name="probe-me")
    labels = {"service": "probe-me", "type": "TOOL_INTEGRATION", "outcome": "passing"}
    before = value(scrape(read_client), "berrys_health_check_latency_seconds_count", **labels) or 0
    health_check_now(service_ids=[svc.pk])
    health_check_now(service_ids=[svc.pk])
    after = scrape(read_client)
    assert value(after, "berrys_health_check_latency_seconds_count", **labels) == before + 2
    assert 0 < value(after, "berrys_health_check_latency_seconds_sum", **labels) < 5
    assert len(server.hits("/health")) == 2
    assert value(after, "berrys_service_status", service="probe-me", type="TOOL_INTEGRATION", status="passing") == 1


def test_the_fallback_without_a_breaker_store_reads_the_latest_breaker_event():
    svc = Service.objects.create(name="evt", type="TOOL_INTEGRATION", url="http://127.0.0.1:3")
    quiet = Service.objects.create(name="quiet", type="TOOL_INTEGRATION", url="http://127.0.0.1:4")
    now = timezone.now()
    BreakerEvent.objects.create(service=svc, service_name="evt", old_state="closed", new_state="open",
                                at=now - timedelta(minutes=2))
    BreakerEvent.objects.create(service=svc, service_name="evt", old_state="open", new_state="half-open",
                                at=now - timedelta(minutes=1))
    assert state_metrics.breaker_states_from_events([svc.id, quiet.id]) == {svc.id: "half-open"}


def test_the_oldest_running_and_queued_steps_are_gauges(read_client):
    from workflows.models import RunStatus, StepRun, StepStatus, WorkflowRun

    samples = scrape(read_client)
    assert value(samples, "berrys_workflow_oldest_running_step_seconds") == 0.0
    assert value(samples, "berrys_workflow_oldest_queued_step_seconds") == 0.0
    now = timezone.now()
    run = WorkflowRun.objects.create(workflow="test_demo", version=1, status=RunStatus.RUNNING, started_at=now)
    StepRun.objects.create(run=run, index=0, name="a", status=StepStatus.RUNNING,
                           started_at=now - timedelta(seconds=300))
    StepRun.objects.create(run=run, index=1, name="b", status=StepStatus.QUEUED,
                           next_attempt_at=now - timedelta(seconds=120))
    StepRun.objects.create(run=run, index=2, name="c", status=StepStatus.RETRYING,
                           next_attempt_at=now + timedelta(seconds=600))  # not due yet: not late
    samples = scrape(read_client)
    assert 300 <= value(samples, "berrys_workflow_oldest_running_step_seconds") < 330
    assert 120 <= value(samples, "berrys_workflow_oldest_queued_step_seconds") < 150
