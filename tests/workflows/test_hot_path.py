"""The two statements every step runs, with and without server-side prepared statements.

Run in this process (no worker): ``step_execute`` is called for each step the way the
``run_step`` task calls it, against the real PostgreSQL and loopback HTTP services.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from workflows import engine
from workflows.engine import run_start, step_execute
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
    claimed = engine._claim(first.pk)
    assert claimed is not None and engine._claim(first.pk) is None  # held: nobody else gets it
    record = engine.AttemptRecord(started_at=engine._now(), finished_at=engine._now(), outcome="succeeded")
    wf = engine.definitions.get("test_demo")
    # A token from an earlier delivery (the lease was taken over meanwhile): nothing is written.
    record.attempt_id = claimed.attempt_id
    result = engine._complete(claimed.run, claimed, claimed.attempts_total - 1, wf, record, 1,
                              StepStatus.SUCCEEDED, {"x": 1})
    assert result == "lost lease"
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
    old = engine._claim(first.pk)
    time_machine.move_to(engine._now() + timedelta(seconds=unconsumed_queue.WORKFLOW_STEP_LEASE_SECONDS + 1))
    new = engine._claim(first.pk)  # the lease expired: another worker takes the step over
    assert new is not None and new.attempts_total == old.attempts_total + 1
    wf = engine.definitions.get("test_demo")
    late = engine.AttemptRecord(started_at=engine._now(), finished_at=engine._now(), outcome="succeeded",
                                attempt_id=old.attempt_id)
    assert engine._complete(old.run, old, old.attempts_total, wf, late, 1, StepStatus.SUCCEEDED,
                            {"late": 1}) == "lost lease"
    ok = engine.AttemptRecord(started_at=engine._now(), finished_at=engine._now(), outcome="succeeded",
                              attempt_id=new.attempt_id)
    assert engine._complete(new.run, new, new.attempts_total, wf, ok, 2, StepStatus.SUCCEEDED,
                            {"project_id": "p-1"}) == "succeeded"
    first.refresh_from_db()
    assert "late" not in (first.output or {})
    # The taken-over try is on record as lost, the new one as succeeded.
    assert list(first.attempts.order_by("number").values_list("outcome", flat=True)) == [
        "worker_lost", "succeeded"]
