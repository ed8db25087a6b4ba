"""Hostile services cannot hang the portal: the web tier under dripping gateway calls, the
health queue under hanging steps, and the sweep under hundreds of black holes.

Real processes (gunicorn, Celery workers) on loopback, ports from the session's range."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from registry import health
from registry.models import HealthSnapshot, HealthStatus, Service
from tests.celery_worker import CeleryWorker
from tests.registry.health_fixtures import ROOT, free_port, subprocess_env
from tests.registry.hostile import Hostile, Metadata, black_hole
from tests.registry.loopback import Reply

pytestmark = pytest.mark.slow
HEALTHY = Reply(200, {"status": "healthy"})


@pytest.fixture
def hostile():
    metadata = Metadata()
    server = Hostile(metadata=metadata)
    yield server
    server.close()
    metadata.close()


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# --- the web tier ----------------------------------------------------------------------------------


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    port = free_port()
    env = subprocess_env()
    env.update(PORTAL_PORT=str(port), WEB_CONCURRENCY="2", PORTAL_VAR_DIR=str(tmp_path),
               PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    (tmp_path / "prom").mkdir()
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "berrys_portal/gunicorn_conf.py", "-b", f"127.0.0.1:{port}",
         "berrys_portal.wsgi"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/health", timeout=1).status_code in (200, 503)
        except requests.RequestException:
            return False

    try:
        _wait(up, 60, "gunicorn")
        yield base
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(20)
        log.close()


def test_the_web_tier_answers_health_and_discovery_while_two_gateway_calls_drip(gunicorn, hostile, full_client):
    Service.objects.create(name="dripper", type="HOSTILE_UPSTREAM", url=hostile.url(),
                           status=HealthStatus.PASSING, breaker_call_timeout_seconds=6)
    Service.objects.create(name="planner", type="PLANNING_SYSTEM", url="http://127.0.0.1:9",
                           status=HealthStatus.PASSING)
    headers = {"Authorization": f"Token {full_client.plain_key}"}
    pool = ThreadPoolExecutor(2)
    started = time.monotonic()
    drips = [pool.submit(requests.get, f"{gunicorn}/gateway/HOSTILE_UPSTREAM/drip", headers=headers, timeout=60)
             for _ in range(2)]
    _wait(lambda: hostile.connections >= 2, 10, "both gateway calls to reach the dripping upstream")
    for _ in range(3):
        t = time.monotonic()
        assert requests.get(f"{gunicorn}/health", timeout=5).status_code in (200, 503)
        discovery = requests.get(f"{gunicorn}/discovery/PLANNING_SYSTEM", headers=headers, timeout=5)
        assert discovery.status_code == 200, discovery.text
        assert time.monotonic() - t < 2.0
        assert not all(d.done() for d in drips)  # still dripping while we were answered
        time.sleep(0.5)
    answers = [d.result() for d in drips]
    # Each try is cut at its total deadline (6 s), whatever the drip; the timeouts count toward
    # the breaker, so a later retry may find it open (503) instead of timing out again (502).
    assert all(a.status_code in (502, 503) and "code" in a.json() for a in answers), [a.text for a in answers]
    assert time.monotonic() - started < 3 * 6 + 8


# --- the health queue under hanging steps -------------------------------------------------------


def test_the_health_queue_keeps_sweeping_while_both_step_slots_hang(
        transactional_db, loopback, clean_state, settings, tmp_path):
    from registry.tasks import health_sweep_task
    from workflows.engine import run_start
    from workflows.models import StepRun, StepStatus

    suffix = uuid.uuid4().hex[:6]
    steps_q, health_q = f"steps-{suffix}", f"health-{suffix}"
    env = subprocess_env()
    env.update(WORKFLOW_QUEUE=steps_q, HEALTH_QUEUE=health_q, EGRESS_STEP_TIMEOUT="40",
               WORKFLOW_DEFINITION_MODULES="tests.workflows.definitions", WORKFLOW_STEP_LEASE_SECONDS="120")
    settings.WORKFLOW_QUEUE = steps_q
    hole = black_hole()
    steps = CeleryWorker(steps_q, env, tmp_path / "steps.log", concurrency=2)
    sweeper = CeleryWorker(health_q, env, tmp_path / "health.log", concurrency=1)
    try:
        steps.start()
        sweeper.start()
        import tests.workflows.definitions  # noqa: F401 - the test workflows

        Service.objects.create(name="hole", type="HOSTILE_UPSTREAM", url=hole.url(), status=HealthStatus.PASSING,
                               breaker_call_timeout_seconds=40)
        for n in range(2):
            run_start(workflow="test_egress_call", input={"route": f"hang-{n}"}, triggered_by="test")
        _wait(lambda: StepRun.objects.filter(status=StepStatus.RUNNING).count() == 2 and hole.connections >= 2,
              60, "both step slots to hang on the black hole")

        server = loopback({"/h": HEALTHY})
        svc = Service.objects.create(name="watched", type="PLANNING_SYSTEM", url=server.url,
                                     health_url=server.url + "/h")
        health_sweep_task.apply_async(queue=health_q)
        _wait(lambda: HealthSnapshot.objects.filter(service=svc).exists(), 45, "the health worker's sweep")
        assert StepRun.objects.filter(status=StepStatus.RUNNING).count() == 2  # the steps still hang
        assert Service.objects.get(pk=svc.pk).status == HealthStatus.PASSING
    finally:
        for worker in (steps, sweeper):
            worker.kill()
        hole.close()


# --- black holes cannot freeze the sweep ----------------------------------------------------------


def test_300_black_holes_do_not_stop_a_new_healthy_service_being_probed_within_60_s(
        loopback, make_service, settings):
    settings.HEALTH_SWEEP_WAIT_SECONDS = 1.0
    hole = black_hole()
    try:
        Service.objects.bulk_create([
            Service(name=f"hole-{n}", type="HOSTILE_UPSTREAM", url=hole.url(), health_url=hole.url(f"/bh/{n}"),
                    check_interval_seconds=5, check_timeout_seconds=10)
            for n in range(300)
        ])
        health.health_sweep()  # every black hole claimed and queued at the one destination
        server = loopback({"/h": HEALTHY})
        healthy = make_service(url=server.url, health_path="/h", check_interval_seconds=5)
        started = time.monotonic()
        sweeps = skipped = 0
        while not HealthSnapshot.objects.filter(service=healthy).exists():
            assert time.monotonic() - started < 60, "the new healthy service was not probed within 60 s"
            report = health.health_sweep()
            sweeps += 1
            skipped += report.skipped_locked
            time.sleep(1)
        waited = time.monotonic() - started
        assert Service.objects.get(pk=healthy.pk).status == HealthStatus.PASSING
        assert skipped == 0  # no sweep held the lock while waiting for black holes
        # The one destination never saw more than its concurrency bound at once.
        assert hole.max_open <= settings.HEALTH_PROBE_PER_DESTINATION_CONCURRENCY
        print(f"probed after {waited:.1f} s, {sweeps} sweeps")
    finally:
        hole.close()
        # Let the background writers of the detached sweeps finish before the database is flushed.
        _wait(lambda: not any(t.name == "sweep-drain" for t in threading.enumerate()), 60, "sweep drains")
