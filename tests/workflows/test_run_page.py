"""The run page as an operator reads it: the cause first, the question first, JSON as JSON,
and only the actions that apply to the run's state."""

from __future__ import annotations

import html
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import timezone

from berrys_portal.roles import OPERATORS, VIEWERS
from tests.personas import logged_in, staff_user
from workflows.models import RunEvent, RunStatus, StepAttempt, StepRun, StepStatus, WorkflowRun

pytestmark = pytest.mark.django_db

CHAT_BUG_BODY = ('{"detail": "Internal Server Error", '
                 '"error": "ProjectCreateRequest got unexpected field(s): status"}')


@pytest.fixture
def operator():
    return logged_in(staff_user("olivia", OPERATORS))


@pytest.fixture
def viewer():
    return logged_in(staff_user("victor", VIEWERS))


def _page(client, run) -> str:
    response = client.get(reverse("admin:workflows_workflowrun_change", args=[run.pk]))
    assert response.status_code == 200
    return response.content.decode()


class _TextOf(HTMLParser):
    """Collects the text inside the element with a given id (nested elements included)."""

    def __init__(self, element_id: str):
        super().__init__()
        self.element_id, self.depth, self.parts = element_id, 0, []

    def handle_starttag(self, tag, attrs):
        if self.depth:
            self.depth += tag not in ("br", "input", "img", "hr")
        elif dict(attrs).get("id") == self.element_id:
            self.depth = 1

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.parts.append(data)


def _block(page: str, element_id: str) -> str:
    """What an operator reads in the element with this id: its text, whitespace collapsed."""
    parser = _TextOf(element_id)
    parser.feed(page)
    assert parser.parts, f"no element with id {element_id}"
    return " ".join(" ".join(parser.parts).split())


def chat_bug_run() -> WorkflowRun:
    """project_creation as the chat sends it with the adapter rule off: the PC's 500, three times."""
    now = timezone.now()
    run = WorkflowRun.objects.create(
        workflow="project_creation", version=1, status=RunStatus.FAILED,
        input={"name": "Berrys website", "status": "PLANNING", "owner": None},
        context={"name": "Berrys website", "status": "PLANNING", "owner": None},
        error="Service error: project-coordinator answered HTTP 500 to POST /projects "
              "(step create_project, after 3 attempts)",
        failed_step="create_project", triggered_by="test", started_at=now, finished_at=now,
    )
    step = StepRun.objects.create(run=run, index=0, name="create_project", service_type="PROJECT_COORDINATOR",
                                  status=StepStatus.FAILED, attempts_total=3, attempt_count=3,
                                  error=run.error, started_at=now, finished_at=now)
    StepRun.objects.create(run=run, index=1, name="start_planning", kind="local", status=StepStatus.PENDING)
    for n in (1, 2, 3):
        StepAttempt.objects.create(
            step=step, number=n, service_name="project-coordinator", request_method="POST",
            request_url="http://127.0.0.1:8101/projects",
            request_body={"name": "Berrys website", "status": "PLANNING", "owner": None},
            response_status=500, response_body=CHAT_BUG_BODY, latency_ms=2.0,
            outcome="failed" if n == 3 else "retry",
            error="Service error: project-coordinator answered HTTP 500 to POST /projects",
            started_at=now + timedelta(seconds=n), finished_at=now + timedelta(seconds=n),
        )
    RunEvent.objects.create(run=run, kind=RunEvent.Kind.STARTED, actor="test",
                            details={"version": 1, "note": None, "flags": [True, False]})
    return run


def waiting_run() -> WorkflowRun:
    now = timezone.now()
    run = WorkflowRun.objects.create(
        workflow="human_interaction", version=1, status=RunStatus.WAITING,
        input={"agent_id": "agent-1", "project_id": "proj-1",
               "question": "Should the Berrys website use a light or a dark theme?"},
        context={"agent_id": "agent-1", "project_id": "proj-1", "question_id": "q-1",
                 "question": "Should the Berrys website use a light or a dark theme?"},
        triggered_by="test", started_at=now,
    )
    names = [("ask_question", StepStatus.SUCCEEDED), ("wait_for_answer", StepStatus.WAITING),
             ("send_answer", StepStatus.PENDING), ("notify_project", StepStatus.PENDING)]
    for index, (name, status) in enumerate(names):
        StepRun.objects.create(run=run, index=index, name=name, status=status,
                               kind="human" if name == "wait_for_answer" else "http",
                               wait_until=now + timedelta(days=7) if status == StepStatus.WAITING else None,
                               output={"question_id": "q-1"} if status == StepStatus.SUCCEEDED else None)
    return run


def test_a_failed_runs_headline_names_step_service_status_and_the_services_own_error(operator):
    run = chat_bug_run()
    page = _page(operator, run)
    headline = _block(page, "wf-failure")
    assert headline.startswith(
        "Step create_project failed: project-coordinator answered HTTP 500 to POST /projects (3 attempts) "
        "ProjectCreateRequest got unexpected field(s): status"
    ), headline
    # It comes first: before the actions, the timeline and the attempts.
    at = page.index('id="wf-failure"')
    assert at < page.index("Retry from failed step") < page.index("Steps and attempts")
    # Each attempt's row says it too, next to its status.
    assert page.count("HTTP 500: <strong class=\"wf-attempt-cause\">ProjectCreateRequest got unexpected") == 3


def test_json_is_shown_as_indented_json_never_as_a_python_repr(operator):
    page = html.unescape(_page(operator, chat_bug_run()))
    assert '"owner": null' in page  # request body, input and context
    assert '{\n  "name": "Berrys website",\n' in page  # indented
    assert '\n  "status": "PLANNING"\n}' in page
    assert '"error": "ProjectCreateRequest got unexpected field(s): status"' in page  # response body
    assert '"note": null' in page and '"flags": [\n    true,\n    false\n  ]' in page  # event details
    assert "None" not in page and "True" not in page and "{'" not in page


def test_a_waiting_run_shows_the_question_and_the_answer_form_at_the_top(operator):
    run = waiting_run()
    page = _page(operator, run)
    waiting = _block(page, "wf-waiting")
    assert "Step wait_for_answer is waiting for an answer" in waiting
    assert "Should the Berrys website use a light or a dark theme?" in waiting
    assert page.index('id="wf-waiting"') < page.index("Definition and timeline") < page.index("Steps and attempts")
    assert page.index('textarea id="wf-answer-data" name="data"') < page.index("Definition and timeline")
    answer_url = reverse("admin:workflows_workflowrun_answer", args=[run.pk])
    assert f'<form id="wf-answer" method="post" action="{answer_url}">' in page
    assert "Cancel run" in page and "Retry from failed step" not in page and "Rerun from a step" not in page

    # What the top form posts (its fields carry form="wf-answer") answers the step.
    response = operator.post(answer_url, {"step": "wait_for_answer", "data": '{"answer": "Dark"}'})
    assert response.status_code == 302
    step = run.steps.get(name="wait_for_answer")
    assert step.status == StepStatus.SUCCEEDED
    assert WorkflowRun.objects.get(pk=run.pk).context["answer"] == "Dark"


def test_a_viewer_sees_the_question_but_no_answer_form_and_no_actions(viewer):
    page = _page(viewer, waiting_run())
    assert "Should the Berrys website use a light or a dark theme?" in page
    assert "wf-answer-data" not in page and "Cancel run" not in page


@pytest.mark.parametrize(("status", "offered", "not_offered"), [
    (RunStatus.SUCCEEDED, ["Rerun from a step", "Rerun with edited input"],
     ["Retry from failed step", "Cancel run", "Resume from where it stopped", "Retry with edited input"]),
    (RunStatus.FAILED, ["Retry from failed step", "Retry with edited input", "Rerun from a step"],
     ["Cancel run", "Resume from where it stopped"]),
    (RunStatus.CANCELLED, ["Resume from where it stopped", "Retry with edited input", "Rerun from a step"],
     ["Retry from failed step", "Cancel run"]),
    (RunStatus.RUNNING, ["Cancel run"],
     ["Retry from failed step", "Rerun from a step", "Retry with edited input", "Resume from where it stopped"]),
])
def test_actions_are_offered_only_where_they_apply(operator, status, offered, not_offered):
    run = chat_bug_run()
    WorkflowRun.objects.filter(pk=run.pk).update(status=status)
    page = _page(operator, run)
    for label in offered:
        assert label in page, label
    for label in not_offered:
        assert label not in page, label
    assert "wf-answer-data" not in page  # nothing waits


def test_the_admin_is_titled_berrys_portal(operator):
    page = _page(operator, chat_bug_run())
    assert "<title>" in page and "| Berrys Portal</title>" in page
    assert '<a href="/admin/">Berrys Portal</a>' in page
    assert "Django administration" not in page
    index = operator.get("/admin/").content.decode()
    assert "Berrys Portal — services and workflows" in index
