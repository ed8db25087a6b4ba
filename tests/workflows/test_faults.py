"""Faults lose nothing: a SIGKILLed worker, an emptied broker, a step that kills its worker."""

from __future__ import annotations

import threading
import time

import pytest

from tests.workflows.conftest import wait_until
from workflows.engine import run_start, steps_reconcile
from workflows.models import (
    RUN_FINISHED,
    AttemptOutcome,
    RunEvent,
    RunStatus,
    StepStatus,
    WorkflowRun,
)

pytestmark = pytest.mark.slow


def reconcile_until_finished(run_ids, timeout: float = 40.0) -> list[WorkflowRun]:
    """Run the reconciler (as beat would) until every run has finished."""
    deadline = time.monotonic() + timeout
    while True:
        runs = list(WorkflowRun.objects.filter(pk__in=run_ids))
        if all(r.status in RUN_FINISHED for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"unfinished: {[(str(r.pk)[:8], r.status) for r in runs]}")
        steps_reconcile()
        time.sleep(0.5)


def test_a_run_survives_its_worker_being_sigkilled_mid_request(engine_env, demo_services):
    worker = engine_env
    arrived, release = threading.Event(), threading.Event()
    calls = []

    def held_plan(body):
        calls.append(body)
        if len(calls) == 1:
            arrived.set()
            release.wait(10)  # the first request hangs while its worker dies
        return 200, {"phases": ["x"]}

    demo_services.routes[("POST", "/plans/strategic/p-1")] = held_plan
    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    assert arrived.wait(20)
    worker.kill()
    release.set()
    assert WorkflowRun.objects.get(pk=run.pk).steps.get(name="plan").status == StepStatus.RUNNING
    worker.start()
    (run,) = reconcile_until_finished([run.pk])
    assert run.status == RunStatus.SUCCEEDED, run.error
    plan = run.steps.get(name="plan")
    # Both tries are on record: the killed one closed as "outcome unknown — worker lost".
    lost, done = plan.attempts.order_by("number")
    assert (lost.outcome, done.outcome) == (AttemptOutcome.WORKER_LOST, AttemptOutcome.SUCCEEDED)
    assert "worker lost" in lost.error and lost.finished_at is not None
    assert len(calls) == 2
    # The repeat carried the same Idempotency-Key, so a careful service could answer it once.
    keys = [h.get("Idempotency-Key") for (m, p, *_), h in zip(demo_services.requests, demo_services.headers,
                                                              strict=True) if p == "/plans/strategic/p-1"]
    assert keys == [f"{run.pk}:plan:1"] * 2
    assert run.events.filter(kind=RunEvent.Kind.REQUEUED, step_name="plan",
                             details__reason="lease expired").exists()


def test_the_reconciler_completes_every_run_after_the_broker_is_emptied(engine_env, demo_services, broker):
    release = threading.Event()

    def held_project(body):
        release.wait(10)
        return 201, {"id": "p-1"}

    demo_services.routes[("POST", "/projects")] = held_project
    run_ids = [run_start(workflow="test_demo", input={"name": f"r{i}"}, triggered_by="test")[0].pk
               for i in range(5)]
    # Two runs are in the worker's hands (concurrency 2); three messages wait in Redis.
    wait_until(lambda: len(demo_services.hits("/projects")) == 2, what="two requests in flight")
    broker.flushdb()  # like a Redis restart without persistence: messages and bindings gone
    release.set()
    runs = reconcile_until_finished(run_ids)
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 5
    assert RunEvent.objects.filter(run_id__in=run_ids, kind=RunEvent.Kind.REQUEUED).count() >= 3


def test_a_step_that_kills_its_worker_every_time_fails_after_the_delivery_cap(engine_env):
    run, _ = run_start(workflow="test_killer", input={}, triggered_by="test")
    (run,) = reconcile_until_finished([run.pk], timeout=60)
    assert run.status == RunStatus.FAILED
    assert run.error.startswith("Delivery cap reached: step boom was delivered 4 times")
    assert "WORKFLOW_MAX_DELIVERIES=3" in run.error
    step = run.steps.get()
    assert (step.status, step.deliveries) == (StepStatus.FAILED, 4)
    assert run.events.filter(kind=RunEvent.Kind.DELIVERY_CAP).exists()


@pytest.mark.django_db
def test_the_reconciler_requeues_a_lost_step_at_most_once_per_pass(wf_settings):
    import datetime as dt

    import time_machine
    from django.utils import timezone

    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    assert steps_reconcile()["requeued"] == 0  # not yet past due + grace
    later = timezone.now() + dt.timedelta(seconds=5)
    with time_machine.travel(later):
        assert steps_reconcile()["requeued"] == 1
        assert steps_reconcile()["requeued"] == 0  # its due time moved: not sent twice
    with time_machine.travel(later + dt.timedelta(seconds=5)):
        assert steps_reconcile()["requeued"] == 1  # still no worker took it: sent again
    events = run.events.filter(kind=RunEvent.Kind.REQUEUED)
    assert events.count() == 2 and events.first().actor == "system"
    assert events.first().details == {"reason": "queued past due"}


def test_setup_periodic_tasks_schedules_the_reconciler_every_5_seconds(transactional_db):
    from django.core.management import call_command
    from django_celery_beat.models import PeriodicTask

    call_command("setup_periodic_tasks")
    row = PeriodicTask.objects.get(task="workflows.reconcile")
    assert row.enabled and row.interval.every == 5 and row.interval.period == "seconds"


def test_a_retry_longer_than_the_visibility_timeout_is_left_to_the_reconciler(
    transactional_db, wf_settings, stub, broker
):
    import datetime as dt
    import uuid

    import time_machine
    from django.utils import timezone

    from workflows.engine import step_execute

    # A queue no worker reads: the broker itself shows what the engine sent.
    parking = f"wf-parking-{uuid.uuid4().hex[:6]}"
    wf_settings.WORKFLOW_QUEUE = parking
    wf_settings.CELERY_VISIBILITY_TIMEOUT = 60
    server = stub()
    server.routes[("POST", "/slow")] = lambda body: (503, {"detail": "busy"})
    server.register("PLANNING_SYSTEM")
    try:
        run, _ = run_start(workflow="test_slow_retry", input={}, triggered_by="test")
        assert broker.llen(parking) == 1  # the first step's message
        broker.delete(parking)
        step = run.steps.get()
        before = timezone.now()
        assert step_execute(step_id=step.pk) == "retry"  # the attempt, in this process
        step.refresh_from_db()
        assert step.status == StepStatus.RETRYING
        assert 119 <= (step.next_attempt_at - before).total_seconds() <= 125
        assert broker.llen(parking) == 0  # no countdown message longer than the visibility timeout
        with time_machine.travel(step.next_attempt_at + dt.timedelta(seconds=2)):
            assert steps_reconcile()["requeued"] == 1
        assert broker.llen(parking) == 1  # sent when due
    finally:
        broker.delete(parking)


def test_a_run_started_while_the_broker_is_down_is_created_and_sent_later(transactional_db, wf_settings, broker):
    import datetime as dt
    import socket
    import uuid

    import time_machine
    from django.utils import timezone

    from berrys_portal.celery import app

    with socket.socket() as sock:  # a port nothing listens on: the broker is "down"
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    parking = f"wf-parking-{uuid.uuid4().hex[:6]}"
    wf_settings.WORKFLOW_QUEUE = parking
    live_url = app.conf.broker_url
    app.conf.broker_url = f"redis://127.0.0.1:{dead_port}/0"
    app._after_fork()  # drop the connection pools so the next publish uses the dead broker
    try:
        run, created = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    finally:
        app.conf.broker_url = live_url
        app._after_fork()
    try:
        assert created and WorkflowRun.objects.filter(pk=run.pk).exists()
        assert run.steps.get(index=0).status == StepStatus.QUEUED
        assert broker.llen(parking) == 0  # nothing reached a broker
        with time_machine.travel(timezone.now() + dt.timedelta(seconds=5)):
            assert steps_reconcile()["requeued"] == 1
        assert broker.llen(parking) == 1  # the broker is back: the reconciler sent it
    finally:
        broker.delete(parking)
