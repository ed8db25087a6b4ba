"""The two statements every step runs, with and without server-side prepared statements.

Run in this process (no worker): ``step_execute`` is called for each step the way the
``run_step`` task calls it, against the real PostgreSQL and loopback HTTP services.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from registry.client import CallInfo
from workflows import definitions
from workflows.engine import claims, run_start, step_execute, transitions
from workflows.engine.attempts import Attempt
from workflows.models import RunStatus, StepAttempt, StepStatus

# Runs on PostgreSQL + Redis and on the embedded default (SQLite); see tests/conftest.py.
pytestmark = pytest.mark.both_dbs


@pytest.fixture
def unconsumed_queue(wf_settings):
    """Messages go to a queue no worker reads: only this test executes the steps."""
    from berrys_portal.celery import app

    wf_settings.WORKFLOW_QUEUE = f"hot-path-{uuid.uuid4().hex[:8]}"
    yield wf_settings
    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(wf_settings.WORKFLOW_QUEUE)


def _attempt(attempt_id) -> Attempt:
    """A finished successful try, as the execution would hand it to a transition."""
    now = timezone.now()
    return Attempt(started_at=now, finished_at=now, outcome="succeeded", attempt_id=attempt_id,
                   call=CallInfo(method="POST", url="/projects"))


def _drive(run) -> list[str]:
    """Execute the run's steps in order, as the worker would; returns what each call did."""
    outcomes = []
    for step in run.steps.order_by("index"):
        outcomes.append(step_execute(step_id=step.pk))
    return outcomes


@pytest.mark.parametrize("prepared", [True, False])
def test_a_run_completes_through_both_statement_paths(prepared, transactional_db, unconsumed_queue, demo_services):
    unconsumed_queue.WORKFLOW_PREPARED_STATEMENTS = prepared
    for _ in range(2):  # twice: the second run reuses the prepared statements
        run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
        assert _drive(run) == ["succeeded"] * 3
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED
        assert run.context["project_id"] == "p-1"
        attempt = StepAttempt.objects.get(step__run=run, step__index=0)
        assert attempt.service_id is not None and attempt.response_status == 201
        assert attempt.request_body == {"name": "A"}


@pytest.mark.parametrize("prepared", [True, False])
def test_a_claim_that_lost_its_lease_changes_nothing(prepared, transactional_db, unconsumed_queue, demo_services):
    unconsumed_queue.WORKFLOW_PREPARED_STATEMENTS = prepared
    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    first = run.steps.get(index=0)
    claimed = claims.step_claim(first.pk)
    assert claimed is not None and claims.step_claim(first.pk) is None  # held: nobody else gets it
    record = _attempt(claimed.attempt_id)
    wf = definitions.get("test_demo")
    # A token from an earlier delivery (the lease was taken over meanwhile): nothing is written.
    stale = claims.Claim(claimed.step, claimed.attempt_id)
    stale.step.attempts_total -= 1
    result, next_step = transitions.step_complete(stale, wf=wf, attempt=record, status=StepStatus.SUCCEEDED,
                                                  output={"x": 1})
    assert (result, next_step) == ("lost lease", None)
    first.refresh_from_db()
    # The try is on record as sent (written by the claim), and stays so.
    assert first.status == StepStatus.RUNNING
    assert list(first.attempts.values_list("number", "outcome")) == [(1, "sent")]
    assert run.steps.get(index=1).status == StepStatus.PENDING


@pytest.mark.parametrize("prepared", [True, False])
def test_a_late_completion_after_a_takeover_is_refused_even_after_a_retry(
    prepared, transactional_db, unconsumed_queue, demo_services, time_machine
):
    """Fencing: the old worker's token never matches again, even once the step is back to
    ``running`` under a new claim (a delivery counter reset by a retry would match)."""
    unconsumed_queue.WORKFLOW_PREPARED_STATEMENTS = prepared
    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    first = run.steps.get(index=0)
    old = claims.step_claim(first.pk)
    time_machine.move_to(timezone.now() + timedelta(seconds=unconsumed_queue.WORKFLOW_STEP_LEASE_SECONDS + 1))
    new = claims.step_claim(first.pk)  # the lease expired: another worker takes the step over
    assert new is not None and new.token == old.token + 1
    wf = definitions.get("test_demo")
    assert transitions.step_complete(old, wf=wf, attempt=_attempt(old.attempt_id), status=StepStatus.SUCCEEDED,
                                     output={"late": 1}) == ("lost lease", None)
    assert transitions.step_complete(new, wf=wf, attempt=_attempt(new.attempt_id), status=StepStatus.SUCCEEDED,
                                     output={"project_id": "p-1"}) == ("succeeded", None)
    first.refresh_from_db()
    assert "late" not in (first.output or {})
    # The taken-over try is on record as lost, the new one as succeeded.
    assert list(first.attempts.order_by("number").values_list("outcome", flat=True)) == [
        "worker_lost", "succeeded"]


# --------------------------------------------------------------------------- one statement per step boundary


@pytest.mark.parametrize("prepared", [True, False])
def test_a_worker_runs_the_next_step_it_claimed_at_the_boundary(prepared, transactional_db, unconsumed_queue,
                                                               demo_services):
    """With an inline budget, completing a step claims the next one for the same call: the
    whole run happens in the first call, each try on record, and the steps' own messages
    find nothing to do."""
    unconsumed_queue.WORKFLOW_PREPARED_STATEMENTS = prepared
    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    steps = list(run.steps.order_by("index"))
    assert step_execute(step_id=steps[0].pk, inline_seconds=30) == "succeeded"
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.context["agents"]
    for step in run.steps.order_by("index"):
        assert (step.status, step.attempts_total, step.deliveries, step.lease_expires_at) == (
            StepStatus.SUCCEEDED, 1, 0, None)
        assert list(step.attempts.values_list("number", "outcome")) == [(1, "succeeded")]
    assert [step_execute(step_id=s.pk, inline_seconds=30) for s in steps[1:]] == ["not claimed"] * 2
    # The Idempotency-Keys are those of separate deliveries: one per step, generation 1.
    assert [h.get("Idempotency-Key") for h in demo_services.headers] == [
        f"{run.pk}:create_project:1", f"{run.pk}:plan:1", f"{run.pk}:assign_agents:1"]


def test_without_a_budget_the_next_step_is_queued_for_a_message(transactional_db, unconsumed_queue, demo_services):
    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    first, second = run.steps.order_by("index")[:2]
    assert step_execute(step_id=first.pk, inline_seconds=0) == "succeeded"
    second.refresh_from_db()
    assert second.status == StepStatus.QUEUED and second.attempts_total == 0
    assert not second.attempts.exists()


def test_a_step_boundary_is_one_statement(transactional_db, unconsumed_queue, demo_services):
    """Claim once, then one statement per step: it records the try, finishes the step, merges
    the context and claims the next step with its "sent" row (PostgreSQL)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "postgresql":
        pytest.skip("the one-statement boundary is PostgreSQL's; the ORM path is a transaction")
    unconsumed_queue.WORKFLOW_PREPARED_STATEMENTS = False  # through Django's cursor: captured
    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    first = run.steps.get(index=0)
    step_execute(step_id=first.pk, inline_seconds=30)  # warms discovery's view
    run, _ = run_start(workflow="test_demo", input={"name": "B"}, triggered_by="test")
    first = run.steps.get(index=0)
    with CaptureQueriesContext(connection) as captured:
        assert step_execute(step_id=first.pk, inline_seconds=30) == "succeeded"
    engine_statements = [q["sql"] for q in captured.captured_queries if "workflows_" in q["sql"]]
    assert len(engine_statements) == 1 + 3, engine_statements


def test_a_redelivered_message_takes_over_the_step_a_dead_worker_ran_inline(
    transactional_db, unconsumed_queue, demo_services
):
    """The worker died running step 2 inline; Celery re-delivers step 1's message (acks_late):
    step 1 is done, so the delivery takes step 2 over at once instead of after its lease."""
    import subprocess
    import sys

    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    first, second = run.steps.order_by("index")[:2]
    assert step_execute(step_id=first.pk, inline_seconds=0) == "succeeded"
    claimed = claims.step_claim(second.pk)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    second.attempts.filter(pk=claimed.attempt_id).update(worker=f"{claims.HOSTNAME}:{dead.pid}")
    assert step_execute(step_id=first.pk, inline_seconds=30) == "succeeded"
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert list(run.steps.get(index=1).attempts.order_by("number").values_list("outcome", flat=True)) == [
        "worker_lost", "succeeded"]


def test_a_step_does_not_lock_the_row_of_the_service_it_called(transactional_db, unconsumed_queue, demo_services):
    # Every worker's steps to one service used to KEY-SHARE-lock that service's row (the
    # foreign key's check at commit): two worker processes met there. A row lock writes its
    # transaction's id into the row's xmax; the steps must leave it as registration left it.
    from django.db import connection

    from registry.models import Service

    def xmax() -> dict:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, xmax::text FROM registry_service ORDER BY id")
            return dict(cursor.fetchall())

    if connection.vendor != "postgresql":
        pytest.skip("row locks and xmax are PostgreSQL's")
    before = xmax()
    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    assert _drive(run) == ["succeeded"] * 3
    called = set(StepAttempt.objects.filter(step__run=run).values_list("service_id", flat=True))
    assert len(called) == 3 and called <= set(Service.objects.values_list("pk", flat=True))
    assert xmax() == before


def test_deleting_a_called_service_keeps_its_attempts_with_the_name(transactional_db, unconsumed_queue, demo_services):
    from registry.models import Service

    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    assert _drive(run) == ["succeeded"] * 3
    attempt = StepAttempt.objects.get(step__run=run, step__index=0)
    name = attempt.service_name
    Service.objects.filter(pk=attempt.service_id).delete()
    attempt.refresh_from_db()
    assert attempt.service_id is None and attempt.service_name == name != ""
