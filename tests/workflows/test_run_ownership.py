"""Runs belong to the API key that started them: other keys get 404; Idempotency-Key is per key."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from registry.auth import api_key_create
from workflows.models import RunEvent, RunStatus, StepStatus, WorkflowRun

pytestmark = pytest.mark.both_dbs

START = "/workflows/runs"


def _client(scopes, name) -> APIClient:
    key, plain = api_key_create(name=name, scopes=scopes)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
    client.api_key = key
    return client


@pytest.fixture
def alice(db):
    return _client(["workflows"], "alice")


@pytest.fixture
def mallory(db):
    return _client(["workflows", "registry:read"], "mallory")


def _waiting(client) -> str:
    """Start test_human through the API and bring it to its waiting step (no worker here)."""
    body = client.post(START, {"workflow": "test_human", "input": {"secret": "plan"}}, format="json").json()
    run = WorkflowRun.objects.get(pk=body["id"])
    run.steps.filter(index=0).update(status=StepStatus.SUCCEEDED, output={"prepared": True})
    run.steps.filter(index=1).update(status=StepStatus.WAITING, wait_until=timezone.now() + timedelta(minutes=5))
    WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.WAITING)
    return body["id"]


def test_a_run_records_the_key_that_started_it(alice):
    run = WorkflowRun.objects.get(pk=_waiting(alice))
    assert run.owner_key == alice.api_key and run.triggered_by == "apikey:alice"


@pytest.mark.parametrize(("method", "suffix", "body"), [
    ("get", "", None),
    ("post", "/retry", {"input": {"secret": "mine now"}}),
    ("post", "/cancel", {}),
    ("post", "/signal", {"data": {"ok": True}}),
])
def test_another_keys_run_is_a_404_and_stays_untouched(alice, mallory, method, suffix, body):
    run_id = _waiting(alice)
    response = getattr(mallory, method)(f"{START}/{run_id}{suffix}", body, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Workflow run {run_id} not found", "code": "not_found"}
    run = WorkflowRun.objects.get(pk=run_id)
    assert run.status == RunStatus.WAITING and run.input == {"secret": "plan"}
    assert list(run.events.values_list("kind", flat=True)) == [RunEvent.Kind.STARTED]
    assert run_id not in str(mallory.get(START).content)  # not listed either


def test_the_owner_and_an_operate_key_may_act(alice):
    operate = _client(["workflows:operate"], "ops")
    mine = _waiting(alice)
    assert alice.get(f"{START}/{mine}").json()["input"] == {"secret": "plan"}
    assert alice.post(f"{START}/{mine}/signal", {"data": {"ok": True}}, format="json").status_code == 200
    other = _waiting(alice)
    response = operate.post(f"{START}/{other}/cancel", {}, format="json")
    assert response.status_code == 200 and response.json()["status"] == RunStatus.CANCELLED
    assert response.json()["events"][-1]["actor"] == "apikey:ops"


def test_a_run_reader_reads_only_its_own_runs_and_cannot_act(alice):
    reader = _client(["runs:read"], "reader")
    run_id = _waiting(alice)
    assert reader.get(f"{START}/{run_id}").status_code == 404
    assert reader.post(f"{START}/{run_id}/cancel", {}, format="json").status_code == 403
    everything = _client(["runs:read:all"], "auditor")
    assert everything.get(f"{START}/{run_id}").status_code == 200
    assert everything.post(f"{START}/{run_id}/cancel", {}, format="json").status_code == 403


def test_the_same_idempotency_key_from_two_keys_starts_two_runs(alice, mallory):
    payload = {"workflow": "test_human", "input": {"secret": "alice's"}}
    first = alice.post(START, payload, format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    assert first.status_code == 201
    again = alice.post(START, payload, format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    theirs = mallory.post(START, {"workflow": "test_human", "input": {}}, format="json",
                          HTTP_IDEMPOTENCY_KEY="order-1")
    assert theirs.status_code == 201
    assert theirs.json()["id"] != first.json()["id"]
    assert theirs.json()["input"] == {}  # never alice's input
    assert WorkflowRun.objects.filter(idempotency_key="order-1").count() == 2


def test_runs_started_without_a_key_share_one_idempotency_scope(db):
    from workflows.engine import run_start

    first, created = run_start(workflow="test_human", input={}, idempotency_key="k", triggered_by="olga")
    again, created_again = run_start(workflow="test_human", input={}, idempotency_key="k", triggered_by="cmd")
    assert created and not created_again and again.pk == first.pk


def _start_child(ctx):
    from workflows.engine import run_start

    child, _ = run_start(workflow="test_human", input={}, idempotency_key=f"child:{ctx['n']}",
                         triggered_by="workflow:test_parent")
    return {"child": str(child.pk)}


def test_a_run_started_by_a_runs_step_belongs_to_the_same_key(alice):
    from workflows import definitions
    from workflows.definitions import Step, Workflow
    from workflows.engine import step_execute

    if "test_parent" not in {wf.name for wf in definitions.all()}:
        definitions.register(Workflow(name="test_parent", version=1, required_inputs=("n",),
                                      steps=[Step(name="spawn", kind="local", local=_start_child)]))
    body = alice.post(START, {"workflow": "test_parent", "input": {"n": 1}}, format="json").json()
    step = WorkflowRun.objects.get(pk=body["id"]).steps.get()
    step_execute(step_id=step.pk)  # in this process: what a worker does
    child_id = WorkflowRun.objects.get(pk=body["id"]).context["child"]
    assert WorkflowRun.objects.get(pk=child_id).owner_key == alice.api_key
    assert alice.get(f"{START}/{child_id}").status_code == 200
