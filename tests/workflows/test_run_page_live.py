"""The run page over real runs: the simulated Berrys services, a real Celery worker, the guide's
workflows. What the operator reads is what the services really answered."""

from __future__ import annotations

import html
import time

import pytest
from django.conf import settings
from django.urls import reverse

from dashboard.roles import OPERATORS
from registry.models import RequestAdapterRule
from tests.personas import logged_in, staff_user
from tests.workflows.conftest import wait_for_run, wait_until
from tests.workflows.test_guide_workflows import PC, RUN_TIMEOUT, berrys, start  # noqa: F401
from tests.workflows.test_run_page import _block
from workflows.models import RunStatus, StepStatus, WorkflowRun

pytestmark = pytest.mark.slow


def _page(run) -> str:
    client = logged_in(staff_user("olivia", OPERATORS))
    response = client.get(reverse("admin:workflows_workflowrun_change", args=[run.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_chat_bug_run_leads_with_the_project_coordinators_own_words(berrys, sims):  # noqa: F811
    berrys()
    rule = RequestAdapterRule.objects.get(service_type=PC, endpoint_pattern="/projects")
    rule.enabled = False
    rule.save()
    time.sleep(settings.ADAPTER_VERSION_CHECK_SECONDS + 0.1)  # the worker reloads its rules
    run = wait_for_run(start("project_creation", name="New Project", status="PLANNING").pk,
                       timeout=RUN_TIMEOUT)
    assert run.status == RunStatus.FAILED
    page = _page(run)
    headline = _block(page, "wf-failure")
    assert headline.startswith("Step create_project failed: project-coordinator answered HTTP 500 to POST "
                               "/projects"), headline
    assert "ProjectCreateRequest got unexpected field(s): status" in headline
    assert '"status": "PLANNING"' in html.unescape(page)  # the request body, as JSON


def test_the_waiting_run_is_answered_from_the_top_of_its_page(berrys, sims):  # noqa: F811
    berrys()
    run = start("human_interaction", agent_id="agent-7", project_id="proj-x",
                question="Which database should we use?")
    wait_until(lambda: WorkflowRun.objects.get(pk=run.pk).status == RunStatus.WAITING,
               timeout=RUN_TIMEOUT, what="the run to wait for an answer")
    page = _page(run)
    assert "Which database should we use?" in _block(page, "wf-waiting")
    assert page.index('id="wf-waiting"') < page.index("Steps and attempts")

    client = logged_in(staff_user("oscar", OPERATORS))
    response = client.post(reverse("admin:workflows_workflowrun_answer", args=[run.pk]),
                           {"step": "wait_for_answer", "data": '{"answer": "PostgreSQL"}'})
    assert response.status_code == 302
    done = wait_for_run(run.pk, timeout=RUN_TIMEOUT)
    assert done.steps.get(name="send_answer").status == StepStatus.SUCCEEDED
    assert sims.state("AGENT_ORCHESTRATOR")["questions"][done.context["question_id"]]["answer"] == "PostgreSQL"
