"""Metrics after real runs on a real worker: the values a scrape shows are the runs' values."""

from __future__ import annotations

import time

import pytest

from tests.dashboard.conftest import wait_for_run
from tests.dashboard.test_metrics import scrape, value
from workflows.engine import run_start
from workflows.models import RunStatus, StepAttempt, WorkflowRun

pytestmark = pytest.mark.slow


def test_runs_steps_and_outcomes_show_up_in_the_scrape_with_the_right_values(engine, flaky_services, read_client):
    before = scrape(read_client)

    flaky_services.flaky.ok = True
    ok_run, _ = run_start(workflow="test_demo", input={"name": "Ok"}, triggered_by="test")
    assert wait_for_run(ok_run.pk).status == RunStatus.SUCCEEDED

    flaky_services.flaky.ok = False
    bad_run, _ = run_start(workflow="test_demo", input={"name": "Bad"}, triggered_by="test")
    bad_run = wait_for_run(bad_run.pk)
    assert bad_run.status == RunStatus.FAILED

    def delta(name, **labels):
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    def observed_attempts():
        return sum(
            delta("berrys_workflow_step_duration_seconds_count", workflow="test_demo", step=step, outcome=o)
            for step in ("create_project", "plan", "assign_agents")
            for o in ("succeeded", "retry", "failed", "fallback", "skipped")
        )

    attempts = StepAttempt.objects.filter(step__run__in=[ok_run.pk, bad_run.pk]).count()
    # The worker counts a finished run and times its last attempt right after committing
    # them, so the scrape may briefly lag the database: allow it a moment.
    deadline = time.monotonic() + 10
    while True:
        after = scrape(read_client)
        done = sum(delta("berrys_workflow_runs_finished_total", workflow="test_demo", status=s)
                   for s in ("succeeded", "failed"))
        if (done >= 2 and observed_attempts() >= attempts) or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    # State, from the database at scrape time.
    for status in ("succeeded", "failed"):
        in_db = WorkflowRun.objects.filter(workflow="test_demo", status=status).count()
        assert value(after, "berrys_workflow_runs", workflow="test_demo", status=status) == in_db
    # Events, counted by the worker process and summed into this scrape.
    assert delta("berrys_workflow_runs_finished_total", workflow="test_demo", status="succeeded") == 1
    assert delta("berrys_workflow_runs_finished_total", workflow="test_demo", status="failed") == 1
    assert delta("berrys_workflow_step_duration_seconds_count",
                 workflow="test_demo", step="create_project", outcome="succeeded") == 2
    # The failing step: two retried attempts then the final failure (FAST_RETRY: 3 attempts).
    assert delta("berrys_workflow_step_duration_seconds_count",
                 workflow="test_demo", step="assign_agents", outcome="retry") == 2
    assert delta("berrys_workflow_step_duration_seconds_count",
                 workflow="test_demo", step="assign_agents", outcome="failed") == 1
    assert observed_attempts() == attempts
