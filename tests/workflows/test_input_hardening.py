"""Hostile input to the workflow API and admin: the issue's former 500s are 400s naming the problem,
and run input cannot steer a step's request outside the path its definition names."""

from __future__ import annotations

import base64
import json

import pytest
from django.urls import reverse

from tests.workflows.conftest import wait_for_run
from tests.workflows.test_admin import make_failed_run
from workflows.definitions import Step
from workflows.engine import run_start
from workflows.models import RunStatus, StepStatus, WorkflowRun

RUNS = "/workflows/runs"


def post_json(client, path: str, text: str):
    return client.post(path, data=text.encode(), content_type="application/json")


def assert_400_naming(response, field: str) -> dict:
    assert response.status_code == 400, (response.status_code, response.content[:300])
    body = response.json()
    assert field in body["errors"], body
    return body


def start_text(input_text: str) -> str:
    return '{"workflow": "test_demo", "input": ' + input_text + "}"


# ----------------------------------------------------------------------------- depth


@pytest.mark.django_db
def test_a_run_input_nested_1000_levels_deep_is_a_400_and_starts_nothing(workflows_client):
    response = post_json(workflows_client, RUNS, start_text('{"name": ' + "[" * 1000 + "]" * 1000 + "}"))
    assert "API_MAX_JSON_DEPTH" in assert_400_naming(response, "body")["detail"]
    assert not WorkflowRun.objects.exists()


@pytest.mark.django_db
def test_input_at_the_depth_limit_is_accepted(workflows_client, settings):
    settings.API_MAX_JSON_DEPTH = 10
    # body (1) > input (2) > name (3) ... 10 levels in all: accepted; one more: refused.
    inner = "[" * 8 + "]" * 8
    ok = post_json(workflows_client, RUNS, start_text('{"name": ' + inner + "}"))
    assert ok.status_code == 201, ok.content
    refused = post_json(workflows_client, RUNS, start_text('{"name": [' + inner + "]}"))
    assert_400_naming(refused, "body")


# ----------------------------------------------------------------------------- NUL and lone surrogates


@pytest.mark.django_db
@pytest.mark.parametrize(("escape", "word"), [("\\u0000", "NUL"), ("\\ud83d", "surrogate"), ("\\uDC00", "surrogate")])
def test_nul_or_a_lone_surrogate_in_run_input_is_a_400_naming_the_field(workflows_client, escape, word):
    response = post_json(workflows_client, RUNS, start_text('{"name": "A", "project": {"title": "x' + escape + '"}}'))
    body = assert_400_naming(response, "input.project.title")
    assert word in body["errors"]["input.project.title"][0]
    assert not WorkflowRun.objects.exists()


@pytest.mark.django_db
def test_nul_in_signal_data_is_a_400_naming_the_field(workflows_client):
    run, _ = run_start(workflow="test_human", input={}, triggered_by="t")
    run.steps.filter(name="approve").update(status=StepStatus.WAITING)
    WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.WAITING)
    response = post_json(workflows_client, f"{RUNS}/{run.pk}/signal",
                         '{"step": "approve", "data": {"comment": "ok\\u0000"}}')
    assert_400_naming(response, "data.comment")
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING


@pytest.mark.django_db
def test_a_lone_surrogate_in_edited_retry_input_is_a_400_naming_the_field(workflows_client):
    run = make_failed_run()
    response = post_json(workflows_client, f"{RUNS}/{run.pk}/retry", '{"input": {"name": "\\udfff"}}')
    assert_400_naming(response, "input.name")
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.input == {"name": "A"}


@pytest.mark.django_db
@pytest.mark.parametrize(("text", "message"), [('{"name": "\\u0000"}', "name: Must not contain NUL"),
                                               ('{"name": NaN}', "name: Numbers must be finite"),
                                               ('{"name": [1e400]}', "name[0]: Numbers must be finite"),
                                               ('{"name": ' + "[" * 900 + "]" * 900 + "}", "API_MAX_JSON_DEPTH")])
def test_the_admins_edit_input_form_refuses_the_same_input(admin_client, text, message):
    run = make_failed_run()
    page = admin_client.post(reverse("admin:workflows_workflowrun_edit_input", args=[run.pk]),
                             {"input": text, "from_step": ""})
    assert page.status_code == 200
    assert message in str(page.context["form"].errors["input"])
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.input == {"name": "A"}


@pytest.mark.django_db
def test_the_admins_answer_form_refuses_nul(admin_client):
    run, _ = run_start(workflow="test_human", input={}, triggered_by="t")
    run.steps.filter(name="approve").update(status=StepStatus.WAITING)
    WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.WAITING)
    page = admin_client.post(reverse("admin:workflows_workflowrun_answer", args=[run.pk]),
                             {"step": "approve", "data": '{"ok": "\\u0000"}'})
    assert page.status_code == 200 and "NUL" in str(page.context["form"].errors["data"])
    assert run.steps.get(name="approve").status == StepStatus.WAITING


# ----------------------------------------------------------------------------- cursor and parameters


def _cursor(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.django_db
@pytest.mark.parametrize("cursor", [
    "cD14",  # p=x: used to reach the datetime lookup and answer 500
    "!!!",  # used to be read as no cursor: page one, silently
    "",
    "cD0yMDI2",  # p=2026
    _cursor("p=2026-01-01 00:00:00"),  # naive
    _cursor("o=-1"),
    _cursor("r=2"),
    _cursor("x=1"),
    _cursor("o=1&o=2"),
    "YQ",  # bad padding
    "%00",
])
def test_any_unreadable_cursor_is_a_400_naming_cursor(workflows_client, cursor):
    response = workflows_client.get(RUNS, {"cursor": cursor})
    assert "Invalid cursor" in assert_400_naming(response, "cursor")["detail"]


@pytest.mark.django_db
def test_the_cursors_the_api_writes_are_read_back(workflows_client):
    for name in ("A", "B", "C"):
        post_json(workflows_client, RUNS, start_text(json.dumps({"name": name})))
    first = workflows_client.get(f"{RUNS}?page_size=1").json()
    second = workflows_client.get(first["next"]).json()
    third = workflows_client.get(second["next"]).json()
    back = workflows_client.get(third["previous"]).json()
    names = [WorkflowRun.objects.get(pk=p["results"][0]["id"]).input["name"] for p in (first, second, third, back)]
    assert names == ["C", "B", "A", "B"]


@pytest.mark.django_db
def test_workflow_list_endpoints_refuse_unknown_and_repeated_parameters(workflows_client):
    client = workflows_client
    assert_400_naming(client.get(RUNS, {"stauts": "failed"}), "stauts")
    assert_400_naming(client.get(f"{RUNS}?status=failed&status=running"), "status")
    assert_400_naming(client.get("/workflows/definitions", {"name": "x"}), "name")
    run_id = post_json(client, RUNS, start_text('{"name": "A"}')).json()["id"]
    assert client.get(f"{RUNS}/{run_id}").status_code == 200
    assert_400_naming(client.get(f"{RUNS}/{run_id}", {"expand": "1"}), "expand")


# ----------------------------------------------------------------------------- path injection

INJECTION = "../../internal-admin/users?delete=1#"


def test_path_values_are_one_encoded_segment():
    step = Step(name="get", service_type="PROJECT_COORDINATOR", method="GET", path="/projects/{project_id}")
    assert step.render_path({"project_id": INJECTION}) == (
        "/projects/..%2F..%2Finternal-admin%2Fusers%3Fdelete%3D1%23")
    assert step.render_path({"project_id": "p-1"}) == "/projects/p-1"
    assert step.render_path({"project_id": 7}) == "/projects/7"
    assert step.render_path({"project_id": "100%"}) == "/projects/100%25"


@pytest.mark.parametrize("value", [".", "..", ""])
def test_dot_and_empty_segments_are_refused(value):
    step = Step(name="get", service_type="PROJECT_COORDINATOR", method="GET", path="/projects/{project_id}/tasks")
    with pytest.raises(ValueError, match="segment"):
        step.render_path({"project_id": value})


def test_two_placeholders_cannot_make_a_dot_segment_together():
    step = Step(name="get", service_type="PROJECT_COORDINATOR", method="GET", path="/p/{a}{b}/x")
    with pytest.raises(ValueError, match="segment"):
        step.render_path({"a": ".", "b": "."})


def test_query_values_cannot_add_parameters():
    step = Step(name="get", service_type="TOOL_INTEGRATION", method="GET", path="/tools?capability={caps}")
    assert step.render_path({"caps": "a,b&admin=1#x"}) == "/tools?capability=a%2Cb%26admin%3D1%23x"


@pytest.mark.slow
def test_a_run_cannot_reach_another_path_on_the_service(engine_env, stub):
    # project_planning's first step is GET /projects/{project_id} on the Project Coordinator.
    server = stub()
    server.routes[("GET", "/internal-admin/users")] = lambda body: (200, {"secret": True})
    server.register("PROJECT_COORDINATOR")
    run, _ = run_start(workflow="project_planning", input={"project_id": INJECTION}, triggered_by="test")
    run = wait_for_run(run.pk)
    paths = [r[1] for r in server.requests]
    assert paths and all(p.startswith("/projects/..%2F..%2Finternal-admin") for p in paths), paths
    assert not any("/internal-admin" in p.split("%2F")[0] for p in paths)
    assert run.status == RunStatus.FAILED  # the stub has no such project: 404


@pytest.mark.slow
def test_a_dot_dot_project_id_fails_the_step_without_a_request(engine_env, stub):
    server = stub()
    server.register("PROJECT_COORDINATOR")
    run, _ = run_start(workflow="project_planning", input={"project_id": ".."}, triggered_by="test")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.FAILED and "segment" in run.error
    assert server.requests == []


@pytest.mark.django_db
@pytest.mark.parametrize(("text", "words"), [('{"name": "a\\u0000"}', "name: Must not contain NUL"),
                                             ('{"name": ' + "[" * 2000 + "]" * 2000 + "}", "API_MAX_JSON_DEPTH"),
                                             ("{", "not valid JSON")])
def test_the_start_workflow_command_applies_the_same_rule(text, words):
    from io import StringIO

    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match=words):
        call_command("start_workflow", "test_demo", "--input", text, stdout=StringIO())
    assert not WorkflowRun.objects.exists()


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["p\u0000-1", "p\ud800", float("inf")])
def test_a_service_answering_what_jsonb_cannot_hold_fails_the_step_instead_of_wedging_it(engine_env, stub, bad):
    # Storing the step's output (jsonb) used to raise on every delivery: the run stayed "running".
    server = stub()
    server.routes[("POST", "/projects")] = lambda body: (201, {"id": bad})
    server.register("PROJECT_COORDINATOR")
    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="t")
    run = wait_for_run(run.pk, timeout=30)
    assert run.status == RunStatus.FAILED
    assert "cannot be stored" in run.error and "id" in run.error
    attempt = run.steps.get(name="create_project").attempts.get()
    assert attempt.outcome == "failed" and attempt.response_status == 201
