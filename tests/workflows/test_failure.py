"""Reading a service's own error text out of its answer (workflows.failure)."""

from __future__ import annotations

import pytest

from workflows.failure import CAUSE_MAX_CHARS, service_error_text

CHAT_BUG = ('{"detail": "Internal Server Error", '
            '"error": "ProjectCreateRequest got unexpected field(s): status"}')


@pytest.mark.parametrize(("body", "status", "expected"), [
    # The guide's Project Coordinator: the generic detail gives way to the specific error.
    (CHAT_BUG, 500, "ProjectCreateRequest got unexpected field(s): status"),
    ('{"detail": "Internal Server Error (simulated fault)"}', 500, "Internal Server Error (simulated fault)"),
    ('{"message": "quota exceeded", "code": 42}', 429, "quota exceeded"),
    ('{"error": {"message": "no such task", "code": "not_found"}}', 404, "no such task"),
    ('{"detail": "Not Found"}', 404, "Not Found"),  # only the generic phrase: still said
    ('{"detail": ["a is required", "b is required"]}', 422, "a is required; b is required"),
    ('{"id": 3, "state": "broken"}', 500, '{"id": 3, "state": "broken"}'),  # no error key: the first line
    ("<html>\n<title>502 Bad Gateway</title>\n</html>", 502, "<html>"),
    ("\n\n  upstream timed out\nmore text", 504, "upstream timed out"),
    ("", 500, ""),
    (None, 500, ""),
])
def test_it_reads_the_services_error_text(body, status, expected):
    assert service_error_text(body, status=status) == expected


def test_it_cuts_a_very_long_cause():
    text = service_error_text('{"error": "' + "x" * 2000 + '"}', status=500)
    assert len(text) == CAUSE_MAX_CHARS and text.endswith("…")


@pytest.mark.django_db
def test_a_failure_without_an_answer_leads_with_the_engines_own_words():
    from django.utils import timezone

    from workflows.failure import failure_headline
    from workflows.models import RunStatus, StepAttempt, StepRun, StepStatus, WorkflowRun

    now = timezone.now()
    run = WorkflowRun.objects.create(workflow="test_demo", version=1, status=RunStatus.FAILED,
                                     failed_step="plan", error="Service not found: no PLANNING_SYSTEM")
    plan = StepRun.objects.create(run=run, index=0, name="plan", service_type="PLANNING_SYSTEM",
                                  status=StepStatus.FAILED, error="Service not found: no PLANNING_SYSTEM")
    # Nothing was sent: the step's error, the service type, no status.
    headline = failure_headline(run=run, steps=[plan])
    assert (headline.step, headline.service, headline.http_status, headline.request) == (
        "plan", "PLANNING_SYSTEM", None, "")
    assert headline.cause == "Service not found: no PLANNING_SYSTEM"

    # A connection error: the attempt's own error, the instance that was tried.
    StepAttempt.objects.create(step=plan, number=1, service_name="planning-1", request_method="POST",
                               request_url="http://127.0.0.1:9/plans", error="connection error: refused",
                               outcome="failed", started_at=now, finished_at=now)
    headline = failure_headline(run=run, steps=[plan])
    assert (headline.service, headline.http_status, headline.request, headline.cause, headline.attempts) == (
        "planning-1", None, "POST /plans", "connection error: refused", 1)

    run.status = RunStatus.SUCCEEDED
    assert failure_headline(run=run, steps=[plan]) is None
