"""Operator actions with a real worker: idempotency, retry, edited input, rerun, cancel, answer."""

from __future__ import annotations

import threading

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone

from registry.breakers import breaker_for
from registry.models import Service
from tests.workflows.conftest import wait_for_run, wait_until
from workflows.engine import run_start, steps_reconcile
from workflows.models import RunEvent, RunStatus, StepStatus, WorkflowRun
from workflows.services import run_answer, run_cancel, run_retry

pytestmark = pytest.mark.slow


def test_the_same_idempotency_key_returns_the_same_run(engine_env, demo_services):
    first, created = run_start(workflow="test_demo", input={"name": "A"}, idempotency_key="k-1",
                               triggered_by="test")
    again, created_again = run_start(workflow="test_demo", input={"name": "A"}, idempotency_key="k-1",
                                     triggered_by="test")
    other, created_other = run_start(workflow="test_demo", input={"name": "A"}, idempotency_key="k-2",
                                     triggered_by="test")
    assert (created, created_again, created_other) == (True, False, True)
    assert again.pk == first.pk and other.pk != first.pk
    wait_for_run(first.pk)
    wait_for_run(other.pk)
    assert len(demo_services.hits("/projects")) == 2


def test_retrying_a_failed_run_resumes_at_the_failed_step_keeping_earlier_outputs(engine_env, demo_services):
    demo_services.routes[("POST", "/agents")] = lambda body: (500, {"detail": "down"})
    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    assert wait_for_run(run.pk).status == RunStatus.FAILED
    demo_services.routes[("POST", "/agents")] = lambda body: (200, ["ok"])
    # Three failed tries tripped the service's breaker; the operator resets it
    # once the service has recovered, then retries the run.
    agent_service = Service.objects.get(type="AGENT_ORCHESTRATOR")
    assert breaker_for(agent_service).snapshot().state == "open"
    breaker_for(agent_service).reset(actor="alice", reason="recovered")
    run_retry(run_id=run.pk, actor="alice")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert len(demo_services.hits("/projects")) == 1  # not called again
    assert len(demo_services.hits("/plans/strategic/p-1")) == 1
    assert run.context["agents"] == ["ok"] and run.context["project_id"] == "p-1"
    agents = run.steps.get(name="assign_agents")
    assert agents.attempts.count() == 4  # three failed tries, then one after the retry
    event = run.events.get(kind=RunEvent.Kind.RETRIED)
    assert (event.actor, event.step_name) == ("alice", "assign_agents")


def test_retrying_with_edited_input_runs_again_with_the_new_input(engine_env, demo_services):
    demo_services.routes[("POST", "/projects")] = lambda body: (
        (422, {"detail": "bad name"}) if body["name"] == "bad" else (201, {"id": "p-1"})
    )
    run, _ = run_start(workflow="test_demo", input={"name": "bad"}, triggered_by="test")
    failed = wait_for_run(run.pk)
    assert failed.status == RunStatus.FAILED
    assert "HTTP 422" in failed.error and "after 1 attempt" in failed.error  # 4xx: not retried
    run_retry(run_id=run.pk, actor="bob", input={"name": "good"})
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.input == {"name": "good"}
    assert [r[2]["name"] for r in demo_services.hits("/projects")] == ["bad", "good"]
    event = run.events.get(kind=RunEvent.Kind.INPUT_EDITED)
    assert event.actor == "bob"
    assert event.details["old_input"] == {"name": "bad"}


def test_rerunning_from_a_chosen_step_repeats_only_that_step_and_the_rest(engine_env, demo_services):
    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
    run_retry(run_id=run.pk, actor="carol", from_step="plan")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert len(demo_services.hits("/projects")) == 1
    assert len(demo_services.hits("/plans/strategic/p-1")) == 2
    assert len(demo_services.hits("/agents")) == 2
    assert run.events.filter(kind=RunEvent.Kind.RERUN, actor="carol").exists()


def test_cancel_lets_the_running_step_finish_and_runs_nothing_further(engine_env, demo_services):
    release = threading.Event()

    def slow_plan(body):
        release.wait(10)
        return 200, {"phases": []}

    demo_services.routes[("POST", "/plans/strategic/p-1")] = slow_plan
    run, _ = run_start(workflow="test_demo", input={"name": "A"}, triggered_by="test")
    wait_until(lambda: demo_services.hits("/plans/strategic/p-1"), what="the plan request")
    run_cancel(run_id=run.pk, actor="dave")
    release.set()
    wait_until(lambda: run.steps.get(name="plan").status == StepStatus.SUCCEEDED, what="plan to finish")
    run = WorkflowRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.CANCELLED
    assert run.steps.get(name="assign_agents").status == StepStatus.PENDING
    assert demo_services.hits("/agents") == []
    assert run.events.filter(kind=RunEvent.Kind.CANCELLED, actor="dave").exists()


def test_a_human_step_waits_until_it_is_answered(engine_env):
    run, _ = run_start(workflow="test_human", input={}, triggered_by="test")
    run = wait_for_run(run.pk, statuses=[RunStatus.WAITING])
    assert run.steps.get(name="approve").status == StepStatus.WAITING
    run_answer(run_id=run.pk, actor="erin", data={"ok": True})
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.context["done"] is True
    assert run.events.get(kind=RunEvent.Kind.ANSWERED).details == {"data": {"ok": True}}


def test_a_human_step_past_its_timeout_takes_its_timeout_outcome(engine_env):
    run, _ = run_start(workflow="test_human", input={}, triggered_by="test")
    wait_for_run(run.pk, statuses=[RunStatus.WAITING])
    assert steps_reconcile()["timed_out"] == 0
    with time_machine.travel(timezone.now() + timezone.timedelta(seconds=601)):
        assert steps_reconcile()["timed_out"] == 1
    run = WorkflowRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.FAILED
    assert run.error == "Timed out waiting for an answer (step approve)"


def test_a_run_started_in_a_transaction_that_rolls_back_never_executes(engine_env, demo_services, broker):
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        run_start(workflow="test_demo", input={"name": "ghost"}, triggered_by="test")
        raise Abort
    assert WorkflowRun.objects.count() == 0
    from tests.workflows.conftest import QUEUE

    assert broker.llen(QUEUE) == 0  # no message was ever sent
    # A run started right after is executed, so the worker was listening all along.
    run, _ = run_start(workflow="test_demo", input={"name": "real"}, triggered_by="test")
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
    assert [r[2]["name"] for r in demo_services.hits("/projects")] == ["real"]


def test_the_start_workflow_command_waits_and_prints_the_final_status(engine_env, demo_services):
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = StringIO()
    call_command("start_workflow", "test_demo", "--input", '{"name": "cli"}', "--wait", "20", stdout=out)
    assert out.getvalue().splitlines()[-1] == "status: succeeded"
    with pytest.raises(CommandError, match="needs input key"):
        call_command("start_workflow", "test_demo", "--input", "{}", stdout=StringIO())
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("start_workflow", "test_demo", "--input", "{oops", stdout=StringIO())
