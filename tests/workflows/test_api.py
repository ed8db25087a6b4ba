"""The workflow REST API: auth, validation, idempotency, filters, actions, schema."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from tests.workflows.conftest import wait_for_run
from workflows.engine import run_start
from workflows.models import RunStatus, WorkflowRun

START = "/workflows/runs"


def _start(client, workflow="test_demo", input=None, **headers):  # noqa: A002
    return client.post(START, {"workflow": workflow, "input": input or {"name": "A"}}, format="json",
                       **headers)


@pytest.mark.django_db
def test_starting_a_run_needs_a_key_with_the_workflows_scope(anon_client, read_client, workflows_client):
    assert _start(anon_client).status_code == 401
    denied = _start(read_client)
    assert denied.status_code == 403 and "workflows" in denied.json()["detail"]
    response = _start(workflows_client)
    assert response.status_code == 201
    body = response.json()
    assert body["workflow"] == "test_demo" and body["status"] == "running"
    assert [s["name"] for s in body["steps"]] == ["create_project", "plan", "assign_agents"]
    assert body["steps"][0]["status"] == "queued"
    assert body["triggered_by"] == "apikey:workflow-caller"


@pytest.mark.django_db
def test_the_same_idempotency_key_returns_the_same_run_with_200(workflows_client):
    first = _start(workflows_client, HTTP_IDEMPOTENCY_KEY="abc")
    again = _start(workflows_client, HTTP_IDEMPOTENCY_KEY="abc")
    other = _start(workflows_client, HTTP_IDEMPOTENCY_KEY="xyz")
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert WorkflowRun.objects.count() == 2
    too_long = _start(workflows_client, HTTP_IDEMPOTENCY_KEY="k" * 201)
    assert too_long.status_code == 400 and "Idempotency-Key" in too_long.json()["errors"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"workflow": "test_demo", "input": {"name": "A"}, "priority": 1}, "priority", "Unknown field"),
        ({"workflow": "no_such_flow", "input": {}}, "workflow", "Unknown workflow 'no_such_flow'"),
        ({"workflow": "test_demo", "input": {}}, "input", "needs input key(s): name"),
        ({"workflow": "test_demo", "input": [1, 2]}, "input", "Must be a JSON object"),
        ({"input": {}}, "workflow", "required"),
    ],
)
def test_bad_start_requests_get_a_400_naming_the_problem(workflows_client, payload, field, words):
    response = workflows_client.post(START, payload, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert words in " ".join(body["errors"][field])
    assert WorkflowRun.objects.count() == 0


@pytest.mark.django_db
def test_every_path_works_with_and_without_a_trailing_slash(workflows_client):
    run_id = _start(workflows_client).json()["id"]
    for path in (START, f"{START}/{run_id}", "/workflows/definitions"):
        assert workflows_client.get(path).status_code == 200, path
        assert workflows_client.get(path + "/").status_code == 200, path
    assert workflows_client.post(f"{START}/{run_id}/cancel/", {}, format="json").status_code == 200
    assert workflows_client.post(START + "/", {"workflow": "test_demo", "input": {"name": "B"}},
                                 format="json").status_code == 201


@pytest.mark.django_db
def test_the_run_list_filters_by_workflow_status_and_creation_time(workflows_client):
    mine = {"triggered_by": "t", "owner_key": workflows_client.api_key}
    demo, _ = run_start(workflow="test_demo", input={"name": "A"}, **mine)
    human, _ = run_start(workflow="test_human", input={}, **mine)
    run_start(workflow="test_demo", input={"name": "not mine"}, triggered_by="operator")  # not listed
    WorkflowRun.objects.filter(pk=human.pk).update(status=RunStatus.FAILED,
                                                   created_at=timezone.now() - dt.timedelta(days=2))

    def ids(**params):
        response = workflows_client.get(START, params)
        assert response.status_code == 200, response.content
        return [r["id"] for r in response.json()["results"]]

    assert ids() == [str(demo.pk), str(human.pk)]
    assert ids(workflow="test_human") == [str(human.pk)]
    assert ids(status="failed") == [str(human.pk)]
    yesterday = (timezone.now() - dt.timedelta(days=1)).isoformat()
    assert ids(created_after=yesterday) == [str(demo.pk)]
    assert ids(created_before=yesterday) == [str(human.pk)]
    page = workflows_client.get(START, {"page_size": 1}).json()
    assert len(page["results"]) == 1 and page["next"]
    assert workflows_client.get(page["next"]).json()["results"][0]["id"] == str(human.pk)
    bad = workflows_client.get(START, {"status": "exploded", "colour": "red"})
    assert bad.status_code == 400
    assert set(bad.json()["errors"]) == {"status", "colour"}


@pytest.mark.django_db
def test_actions_on_the_wrong_state_or_an_unknown_run_are_refused_clearly(workflows_client, read_client):
    run_id = _start(workflows_client).json()["id"]
    busy = workflows_client.post(f"{START}/{run_id}/retry", {}, format="json")
    assert busy.status_code == 409 and "cancel it before retrying" in busy.json()["detail"]
    assert read_client.post(f"{START}/{run_id}/cancel", {}, format="json").status_code == 403
    assert workflows_client.post(f"{START}/{run_id}/cancel", {}, format="json").json()["status"] == "cancelled"
    assert workflows_client.post(f"{START}/{run_id}/cancel", {}, format="json").status_code == 409
    unknown_step = workflows_client.post(f"{START}/{run_id}/retry", {"from_step": "nope"}, format="json")
    assert unknown_step.status_code == 400 and "no step 'nope'" in unknown_step.json()["errors"]["from_step"][0]
    extra = workflows_client.post(f"{START}/{run_id}/retry", {"form_step": "plan"}, format="json")
    assert extra.status_code == 400 and "form_step" in extra.json()["errors"]
    no_wait = workflows_client.post(f"{START}/{run_id}/signal", {"data": {}}, format="json")
    assert no_wait.status_code == 409
    assert no_wait.json()["detail"].endswith("has no waiting step (run status: cancelled)")
    missing = "00000000-0000-0000-0000-000000000000"
    assert workflows_client.get(f"{START}/{missing}").status_code == 404
    assert workflows_client.post(f"{START}/{missing}/cancel", {}, format="json").status_code == 404


@pytest.mark.django_db
def test_definitions_list_steps_and_required_and_optional_services(read_client):
    response = read_client.get("/workflows/definitions")
    assert response.status_code == 200
    demo = next(d for d in response.json() if d["name"] == "test_demo")
    assert demo["required_services"] == ["AGENT_ORCHESTRATOR", "PROJECT_COORDINATOR"]
    assert demo["optional_services"] == ["PLANNING_SYSTEM"]
    assert demo["required_inputs"] == ["name"]
    assert demo["steps"][1] == {
        "name": "plan", "kind": "http", "service_type": "PLANNING_SYSTEM", "method": "POST",
        "path": "/plans/strategic/{project_id}", "required": False, "has_fallback": True,
        "max_attempts": 3, "timeout": 5.0, "idempotency_header": "Idempotency-Key",
        "delivery": "exactly once", "description": "",
    }


@pytest.mark.django_db
def test_the_schema_describes_every_workflow_endpoint(anon_client):
    schema = anon_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/workflows/runs", "/workflows/runs/{run_id}", "/workflows/runs/{run_id}/retry",
                 "/workflows/runs/{run_id}/cancel", "/workflows/runs/{run_id}/signal",
                 "/workflows/definitions"):
        assert path in text, path
    assert "Idempotency-Key" in text and "RunStartInput" in text
    schema = anon_client.get("/api/schema/?format=json").json()
    retry = schema["paths"]["/workflows/runs/{run_id}/retry/"]["post"]
    assert {"200", "400", "404", "409"} <= set(retry["responses"])
    start = schema["paths"]["/workflows/runs/"]["post"]
    assert {"200", "201", "400"} <= set(start["responses"])


@pytest.mark.slow
def test_a_caller_answers_a_human_step_through_the_signal_endpoint(engine_env, workflows_client):
    run_id = _start(workflows_client, workflow="test_human", input={}).json()["id"]
    wait_for_run(run_id, statuses=[RunStatus.WAITING])
    response = workflows_client.post(f"{START}/{run_id}/signal",
                                     {"step": "approve", "data": {"ok": False}}, format="json")
    assert response.status_code == 200, response.content
    run = wait_for_run(run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.context["done"] is False
    detail = workflows_client.get(f"{START}/{run_id}").json()
    assert detail["events"][-1]["actor"] == "apikey:workflow-caller"
    assert [s["status"] for s in detail["steps"]] == ["succeeded"] * 3
    assert detail["steps"][0]["attempts"][0]["request_method"] == "LOCAL"


@pytest.mark.django_db
@pytest.mark.parametrize("run_id", ["0" * 36, "00000000-0000-0000-0000-00000000000g", "not-a-run"])
def test_a_malformed_run_id_is_a_json_404_on_every_run_path(workflows_client, run_id):
    # Found by the schema fuzzer: 36 hex digits without dashes used to reach the ORM and answer 500.
    for suffix, method in [("", "get"), ("/retry", "post"), ("/cancel", "post"), ("/signal", "post")]:
        response = getattr(workflows_client, method)(f"{START}/{run_id}{suffix}", {}, format="json")
        assert response.status_code == 404, (suffix, response.status_code)
        assert response.json()["code"] == "not_found"


@pytest.mark.django_db
def test_the_run_list_is_a_page_and_a_bad_cursor_is_a_400_naming_it(workflows_client):
    for name in ("A", "B", "C"):
        _start(workflows_client, input={"name": name})
    page = workflows_client.get(f"{START}?page_size=2").json()
    assert set(page) == {"next", "previous", "results"} and len(page["results"]) == 2
    rest = workflows_client.get(page["next"]).json()
    assert len(rest["results"]) == 1 and rest["next"] is None
    bad = workflows_client.get(f"{START}?cursor=0")
    assert bad.status_code == 400
    assert "cursor" in bad.json()["errors"] and "Invalid cursor" in bad.json()["detail"]
