"""Rows for dashboard tests, written straight to the tables (no worker needed)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

import tests.workflows.definitions  # noqa: F401 - registers test_demo
from workflows.models import RunStatus, StepAttempt, StepRun, StepStatus, WorkflowRun

DEMO_STEPS = [
    ("create_project", "PROJECT_COORDINATOR", True),
    ("plan", "PLANNING_SYSTEM", False),
    ("assign_agents", "AGENT_ORCHESTRATOR", True),
]


def failed_run(*, minutes_ago: float = 5, error: str = "HTTP 500 from agent_orchestrator-1") -> WorkflowRun:
    """A test_demo run that failed at assign_agents after three attempts (two retries)."""
    now = timezone.now()
    t0 = now - timedelta(minutes=minutes_ago)
    run = WorkflowRun.objects.create(
        workflow="test_demo", version=1, status=RunStatus.FAILED, input={"name": "Apollo"},
        context={"name": "Apollo", "project_id": "p-1", "plan": {"phases": ["a"]}},
        error=error, failed_step="assign_agents", triggered_by="test",
    )
    WorkflowRun.objects.filter(pk=run.pk).update(created_at=t0, started_at=t0, finished_at=t0 + timedelta(seconds=4))
    statuses = [StepStatus.SUCCEEDED, StepStatus.SUCCEEDED, StepStatus.FAILED]
    for index, ((name, stype, required), status) in enumerate(zip(DEMO_STEPS, statuses, strict=True)):
        start = t0 + timedelta(seconds=index)
        step = StepRun.objects.create(
            run=run, index=index, name=name, service_type=stype, required=required, status=status,
            attempt_count=3 if status == StepStatus.FAILED else 1,
            attempts_total=3 if status == StepStatus.FAILED else 1, started_at=start,
            finished_at=start + timedelta(seconds=0.9 if status == StepStatus.FAILED else 0.2),
            output=None if status == StepStatus.FAILED else {name: True},
            error=error if status == StepStatus.FAILED else "",
        )
        tries = 3 if status == StepStatus.FAILED else 1
        for n in range(1, tries + 1):
            a0 = start + timedelta(seconds=0.3 * (n - 1))
            outcome = "succeeded" if status != StepStatus.FAILED else ("retry" if n < tries else "failed")
            StepAttempt.objects.create(
                step=step, number=n, service_name=f"{stype.lower()}-1", request_method="POST",
                request_url=f"http://127.0.0.1:1/{name}", response_status=200 if outcome == "succeeded" else 500,
                latency_ms=20.0, outcome=outcome, error="" if outcome == "succeeded" else "HTTP 500",
                started_at=a0, finished_at=a0 + timedelta(milliseconds=120),
            )
    run.refresh_from_db()
    return run
