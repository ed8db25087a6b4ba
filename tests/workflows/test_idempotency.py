"""Effects exactly once: every call of a step carries its idempotency key, the same on every
redelivery and retry, a new one after an operator rerun; leases held by a heartbeat; the run
page shows lost tries and steps that are only "at least once"."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.urls import reverse

from berrys_portal.roles import OPERATORS
from tests.personas import logged_in, staff_user
from tests.workflows.conftest import wait_for_run
from workflows import engine
from workflows.engine import run_start, step_execute, steps_reconcile
from workflows.models import AttemptOutcome, RunEvent, RunStatus, StepStatus
from workflows.services import run_retry


@pytest.fixture
def unconsumed_queue(wf_settings):
    """Messages go to a queue no worker reads: only this test executes the steps."""
    from berrys_portal.celery import app

    wf_settings.WORKFLOW_QUEUE = f"idem-{uuid.uuid4().hex[:8]}"
    yield wf_settings
    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(wf_settings.WORKFLOW_QUEUE)


def _headers_for(server, path: str) -> list[dict[str, str]]:
    return [h for (_, p, *_), h in zip(server.requests, server.headers, strict=True) if p == path]


def test_each_step_sends_its_key_in_the_header_its_definition_names(transactional_db, unconsumed_queue, stub):
    server = stub()
    for path in ("/k/default", "/k/renamed", "/k/off", "/k/no-dedupe"):
        server.routes[("POST", path)] = lambda body: (200, {"ok": True})
    server.register("PROJECT_COORDINATOR")
    run, _ = run_start(workflow="test_keys", input={}, triggered_by="test")
    for step in run.steps.order_by("index"):
        assert step_execute(step_id=step.pk) == "succeeded"
    assert _headers_for(server, "/k/default")[0]["Idempotency-Key"] == f"{run.pk}:default:1"
    renamed = _headers_for(server, "/k/renamed")[0]
    assert renamed["X-Request-Key"] == f"{run.pk}:renamed:1" and "Idempotency-Key" not in renamed
    off = _headers_for(server, "/k/off")[0]
    assert not any(k.lower() in ("idempotency-key", "x-request-key") for k in off)
    assert _headers_for(server, "/k/no-dedupe")[0]["Idempotency-Key"] == f"{run.pk}:no_dedupe:1"


def test_a_retry_repeats_the_key_and_an_operator_rerun_gets_a_new_one(transactional_db, unconsumed_queue, stub):
    server = stub()
    answers = iter([(503, {"detail": "busy"}), (200, {"phases": ["a"]}), (200, {"phases": ["b"]})])
    server.routes[("POST", "/projects")] = lambda body: (201, {"id": "p-1"})
    server.routes[("POST", "/plans/strategic/p-1")] = lambda body: next(answers)
    server.routes[("POST", "/agents")] = lambda body: (200, [])
    for t in ("PROJECT_COORDINATOR", "PLANNING_SYSTEM", "AGENT_ORCHESTRATOR"):
        server.register(t)
    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    steps = list(run.steps.order_by("index"))
    assert step_execute(step_id=steps[0].pk) == "succeeded"
    assert step_execute(step_id=steps[1].pk) == "retry"
    time.sleep(0.25)  # the retry's delay
    assert step_execute(step_id=steps[1].pk) == "succeeded"
    assert step_execute(step_id=steps[2].pk) == "succeeded"
    run_retry(run_id=run.pk, actor="carol", from_step="plan")
    assert step_execute(step_id=steps[1].pk) == "succeeded"
    keys = [h["Idempotency-Key"] for h in _headers_for(server, "/plans/strategic/p-1")]
    assert keys == [f"{run.pk}:plan:1", f"{run.pk}:plan:1", f"{run.pk}:plan:2"]
    steps[0].refresh_from_db()
    steps[1].refresh_from_db()
    assert (steps[0].generation, steps[1].generation) == (1, 2)


@pytest.mark.django_db
def test_the_run_page_marks_at_least_once_steps_and_shows_a_lost_try():
    from django.utils import timezone

    from workflows.models import StepAttempt, StepRun, WorkflowRun

    now = timezone.now()
    run = WorkflowRun.objects.create(workflow="test_keys", version=1, status=RunStatus.RUNNING,
                                     triggered_by="test", started_at=now)
    for i, name in enumerate(["default", "renamed", "off", "no_dedupe"]):
        step = StepRun.objects.create(run=run, index=i, name=name, service_type="PROJECT_COORDINATOR",
                                      status=StepStatus.SUCCEEDED if i < 3 else StepStatus.RUNNING,
                                      started_at=now, attempts_total=2 if i == 3 else 1)
    StepAttempt.objects.create(step=step, number=1, outcome=AttemptOutcome.WORKER_LOST, started_at=now,
                               finished_at=now, worker="host-a:1",
                               error=engine.WORKER_LOST.format(why="no heartbeat: its lease expired"))
    StepAttempt.objects.create(step=step, number=2, outcome=AttemptOutcome.SENT, started_at=now,
                               worker="host-b:2")
    client = logged_in(staff_user("olivia", OPERATORS))
    page = client.get(reverse("admin:workflows_workflowrun_change", args=[run.pk])).content.decode()
    assert page.count('class="wf-at-least-once"') == 2  # header off, and the service that cannot dedupe
    assert page.count('class="wf-exactly-once"') == 2
    assert f"X-Request-Key: <code>{run.pk}:renamed:1</code>" in page
    assert "Outcome unknown — worker lost" in page  # the attempts table and the timeline
    assert page.count("attempt 1: Outcome unknown — worker lost") == 1
    assert "Sent (in flight)" in page and "attempt 2: sent (in flight)" in page


@pytest.mark.slow
def test_a_step_longer_than_its_lease_is_kept_by_the_heartbeat(engine_env, stub):
    server = stub()
    calls = []

    def slow(body):
        calls.append(time.monotonic())
        time.sleep(8)  # the test worker's lease is 5 s
        return 200, {"ok": True}

    server.routes[("POST", "/long")] = slow
    server.register("PLANNING_SYSTEM")
    run, _ = run_start(workflow="test_long_step", input={}, triggered_by="test")
    stop = threading.Event()

    def beat():  # the reconciler, as beat would run it, all through the step
        while not stop.is_set():
            steps_reconcile()
            stop.wait(0.5)

    reconciler = threading.Thread(target=beat)
    reconciler.start()
    try:
        run = wait_for_run(run.pk, timeout=30)
    finally:
        stop.set()
        reconciler.join()
    assert run.status == RunStatus.SUCCEEDED
    assert len(calls) == 1
    assert not RunEvent.objects.filter(run=run, kind=RunEvent.Kind.REQUEUED).exists()
    assert list(run.steps.get().attempts.values_list("outcome", flat=True)) == ["succeeded"]


@pytest.mark.slow
def test_a_stopping_worker_hands_its_step_back_at_once(engine_env, demo_services):
    """SIGTERM to the worker's process group (systemd, container stop): the pool process
    running the step hands it back before dying, so it does not wait for its lease."""
    worker = engine_env
    arrived, release = threading.Event(), threading.Event()
    calls = []

    def held(body):
        calls.append(body)
        if len(calls) == 1:
            arrived.set()
            release.wait(10)
        return 200, {"phases": ["x"]}

    demo_services.routes[("POST", "/plans/strategic/p-1")] = held
    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    assert arrived.wait(20)
    worker.stop()  # SIGTERM to the whole group
    release.set()
    plan = run.steps.get(name="plan")
    assert plan.status == StepStatus.QUEUED  # handed back, not left running until the lease ends
    (lost,) = plan.attempts.all()
    assert lost.outcome == AttemptOutcome.WORKER_LOST and "handed back" in lost.error
    assert RunEvent.objects.filter(run=run, kind=RunEvent.Kind.REQUEUED,
                                   details__reason="worker stopping: step handed back").exists()
    worker.start()
    run = wait_for_run(run.pk, timeout=30)
    assert run.status == RunStatus.SUCCEEDED
    keys = {h["Idempotency-Key"] for (_, p, *_), h in zip(demo_services.requests, demo_services.headers,
                                                           strict=True) if p == "/plans/strategic/p-1"}
    assert keys == {f"{run.pk}:plan:1"}
