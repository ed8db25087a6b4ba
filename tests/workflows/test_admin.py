"""The run admin: list (filters, search, no full COUNT), run page, operator actions."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from workflows.admin import CappedCountPaginator
from workflows.engine import run_start
from workflows.models import RunEvent, RunStatus, StepAttempt, StepStatus, WorkflowRun

# Runs on PostgreSQL + Redis and on the embedded default (SQLite); see tests/conftest.py.
pytestmark = pytest.mark.both_dbs

LIST = "/admin/workflows/workflowrun/"


def make_failed_run(name="A") -> WorkflowRun:
    run, _ = run_start(workflow="test_demo", input={"name": name}, triggered_by="t")
    now = timezone.now()
    steps = list(run.steps.order_by("index"))
    steps[0].status, steps[0].output = StepStatus.SUCCEEDED, {"project_id": "p-1"}
    steps[0].started_at, steps[0].finished_at, steps[0].attempts_total = now, now, 1
    steps[0].save()
    StepAttempt.objects.create(step=steps[0], number=1, request_method="POST",
                               request_url="http://127.0.0.1:1/projects", request_body={"name": name},
                               response_status=201, response_body='{"id": "p-1"}', latency_ms=3.2,
                               outcome="succeeded", started_at=now, finished_at=now)
    steps[1].status, steps[1].error, steps[1].started_at, steps[1].finished_at = (
        StepStatus.FAILED, "Service error: boom", now, now)
    steps[1].save()
    WorkflowRun.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED, failed_step="plan", finished_at=now,
        error="Service error: planning answered HTTP 500 (step plan, after 3 attempts)",
        context={"name": name, "project_id": "p-1"},
    )
    return WorkflowRun.objects.get(pk=run.pk)


@pytest.mark.django_db
def test_the_admin_needs_a_login(client):
    response = client.get(LIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_the_run_list_filters_searches_and_never_counts_the_whole_table(admin_client):
    failed = make_failed_run()
    running, _ = run_start(workflow="test_human", input={}, triggered_by="t")
    old = make_failed_run("old")
    WorkflowRun.objects.filter(pk=old.pk).update(finished_at=timezone.now() - dt.timedelta(days=3))

    def shown(params=""):
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(LIST + params)
        assert response.status_code == 200
        counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
        assert all("LIMIT" in sql.upper() for sql in counts), counts  # capped counts only
        return {str(r.pk) for r in response.context["cl"].result_list}

    assert shown() == {str(failed.pk), str(running.pk), str(old.pk)}
    assert shown("?workflow=test_human") == {str(running.pk)}
    assert shown("?status__exact=failed") == {str(failed.pk), str(old.pk)}
    assert shown("?failed_within=24h") == {str(failed.pk)}
    assert shown(f"?q={str(failed.pk)[:8]}") == {str(failed.pk)}
    assert shown(f"?q={failed.pk}") == {str(failed.pk)}
    assert shown("?q=not-an-id") == set()
    page = admin_client.get(LIST).content.decode()
    assert "failed</span>" in page and str(failed.pk)[:8] in page


@pytest.mark.django_db
def test_the_paginator_counts_exactly_only_small_results(monkeypatch):
    for i in range(7):
        run_start(workflow="test_human", input={}, triggered_by=str(i))
    qs = WorkflowRun.objects.filter(workflow="test_human").order_by("-created_at")
    with CaptureQueriesContext(connection) as queries:
        assert CappedCountPaginator(qs, 2).count == 7
    if connection.vendor != "postgresql":
        # SQLite has no planner estimate: one exact but bounded count, above the cap too.
        assert len(queries) == 1 and "LIMIT 10001" in queries[0]["sql"]
        monkeypatch.setattr(CappedCountPaginator, "CAP", 3)
        assert CappedCountPaginator(qs, 2).count == 4  # capped: "more than 3"
        return
    assert queries[0]["sql"].startswith("EXPLAIN")  # the planner is asked first, no rows read
    assert "LIMIT 10001" in queries[1]["sql"]  # then an exact but bounded count
    monkeypatch.setattr(CappedCountPaginator, "CAP", 0)
    with CaptureQueriesContext(connection) as queries:
        estimate = CappedCountPaginator(qs, 2).count
    assert estimate >= 1 and len(queries) == 1  # above the cap: the estimate, no COUNT at all


@pytest.mark.django_db
def test_the_run_page_shows_the_error_first_then_steps_attempts_and_a_timeline(admin_client):
    run = make_failed_run()
    page = admin_client.get(reverse("admin:workflows_workflowrun_change", args=[run.pk])).content.decode()
    error_at = page.index("planning answered HTTP 500 (step plan, after 3 attempts)")
    assert error_at < page.index("aria-label=\"Run timeline\"")
    assert page.index("aria-label=\"Run timeline\"") < page.index("Steps and attempts")
    assert "http://127.0.0.1:1/projects" in page and "3.2 ms" in page
    assert "Retry from failed step" in page and "Retry with edited input" in page
    assert "Cancel run" not in page


@pytest.mark.django_db
def test_a_succeeded_run_offers_rerun_but_not_retry_from_a_failed_step(admin_client):
    run = make_failed_run()
    WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, error="", failed_step="")
    page = admin_client.get(reverse("admin:workflows_workflowrun_change", args=[run.pk])).content.decode()
    assert "Retry from failed step" not in page and "Cancel run" not in page
    assert "Rerun from a step" in page and "Rerun with edited input" in page


@pytest.mark.django_db
def test_operators_retry_edit_input_rerun_and_cancel_from_the_run_page(admin_client, admin_user):
    run = make_failed_run()
    url = reverse("admin:workflows_workflowrun_retry", args=[run.pk])
    admin_client.post(url)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    assert run.steps.get(name="plan").status == StepStatus.QUEUED
    assert run.steps.get(name="create_project").status == StepStatus.SUCCEEDED
    admin_client.post(reverse("admin:workflows_workflowrun_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED

    edit = reverse("admin:workflows_workflowrun_edit_input", args=[run.pk])
    assert "&quot;name&quot;: &quot;A&quot;" in admin_client.get(edit).content.decode()
    bad = admin_client.post(edit, {"input": "[1, 2]", "from_step": ""})
    assert "The input must be a JSON object." in bad.content.decode()
    admin_client.post(edit, {"input": '{"name": "B"}', "from_step": ""})
    run.refresh_from_db()
    assert run.input == {"name": "B"} and run.status == RunStatus.RUNNING
    admin_client.post(reverse("admin:workflows_workflowrun_cancel", args=[run.pk]))

    admin_client.post(reverse("admin:workflows_workflowrun_rerun", args=[run.pk]), {"from_step": "create_project"})
    run.refresh_from_db()
    assert run.steps.get(name="create_project").status == StepStatus.QUEUED
    kinds = list(run.events.values_list("kind", "actor"))
    assert (RunEvent.Kind.RETRIED, admin_user.username) in kinds
    assert (RunEvent.Kind.INPUT_EDITED, admin_user.username) in kinds
    assert (RunEvent.Kind.RERUN, admin_user.username) in kinds
    assert (RunEvent.Kind.CANCELLED, admin_user.username) in kinds


@pytest.mark.django_db
def test_operators_answer_a_waiting_step_in_the_admin(admin_client, admin_user):
    run, _ = run_start(workflow="test_human", input={}, triggered_by="t")
    run.steps.filter(name="prepare").update(status=StepStatus.SUCCEEDED, output={"prepared": True})
    run.steps.filter(name="approve").update(status=StepStatus.WAITING)
    WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.WAITING)
    url = reverse("admin:workflows_workflowrun_answer", args=[run.pk])
    assert "Approve?" in admin_client.get(url).content.decode()
    admin_client.post(url, {"step": "approve", "data": '{"ok": true}'})
    run.refresh_from_db()
    assert run.context["approve"] == {"ok": True}
    assert run.steps.get(name="finish").status == StepStatus.QUEUED
    assert run.events.get(kind=RunEvent.Kind.ANSWERED).actor == admin_user.username


@pytest.mark.django_db
def test_bulk_actions_retry_and_cancel_many_runs_and_report_refusals(admin_client):
    failed = [make_failed_run(str(i)) for i in range(3)]
    response = admin_client.post(LIST, {"action": "retry_runs",
                                        "_selected_action": [str(r.pk) for r in failed]}, follow=True)
    assert "3 run(s) retried." in response.content.decode()
    assert WorkflowRun.objects.filter(status=RunStatus.RUNNING).count() == 3
    response = admin_client.post(LIST, {"action": "retry_runs", "_selected_action": [str(failed[0].pk)]},
                                 follow=True)
    assert "1 refused" in response.content.decode() and "cancel it before retrying" in response.content.decode()
    response = admin_client.post(LIST, {"action": "cancel_runs",
                                        "_selected_action": [str(r.pk) for r in failed]}, follow=True)
    assert "3 run(s) cancelled." in response.content.decode()


@pytest.mark.django_db
def test_a_viewer_sees_runs_but_cannot_act_on_them(client, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_workflowrun"))
    client.force_login(viewer)
    run = make_failed_run()
    page = client.get(reverse("admin:workflows_workflowrun_change", args=[run.pk]))
    assert page.status_code == 200 and "Retry from failed step" not in page.content.decode()
    assert "retry_runs" not in client.get(LIST).content.decode()
    assert client.post(reverse("admin:workflows_workflowrun_retry", args=[run.pk])).status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert client.get(reverse("admin:workflows_workflowrun_change", args=["not-a-uuid"])).status_code == 302
