"""Operator actions on runs: retry, retry with edited input, rerun from a step, cancel, answer.

The admin and the API call these; each locks the run, changes state, records a
RunEvent with the operator's name, and enqueues work only after commit.

Through the API (a ``key``) a run is acted on only by the key that started it or
a key with ``workflows:operate``; any other key is told the run does not exist
(404: a run's id reveals nothing to a stranger). Operators (no key) act on all.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone

from berrys_portal.errors import Conflict, InvalidInput, NotFound
from registry.scopes import Scope, key_has_scope
from workflows import definitions, engine
from workflows.models import (
    RUN_ACTIVE,
    STEP_DONE,
    RunEvent,
    RunStatus,
    StepStatus,
    WorkflowRun,
)


def run_visible_to(runs, *, key, act: bool = False):
    """``runs`` narrowed to what ``key`` may read (``act``: act on); no key (an operator): all of them."""
    if key is None or key_has_scope(key, Scope.WORKFLOWS_OPERATE if act else Scope.RUNS_READ_ALL):
        return runs
    return runs.filter(owner_key=key)


def _locked_run(run_id: UUID | str, key=None) -> WorkflowRun:
    try:
        return run_visible_to(WorkflowRun.objects.select_for_update(), key=key, act=True).get(pk=run_id)
    except (WorkflowRun.DoesNotExist, ValueError, DjangoValidationError):
        raise NotFound(f"Workflow run {run_id} not found") from None


def run_retry(
    *,
    run_id: UUID | str,
    actor: str,
    key=None,
    from_step: str | None = None,
    input: dict[str, Any] | None = None,  # noqa: A002 - the API's field name
) -> WorkflowRun:
    """Run a finished run again from its failed step (or ``from_step``), keeping earlier outputs.

    With ``input``, the run's input is replaced first (retry with edited input); the
    context is rebuilt from the new input plus the outputs of the steps before the
    restart point.
    """
    with transaction.atomic():
        run = _locked_run(run_id, key)
        if run.status in RUN_ACTIVE:
            raise Conflict(f"Run {run.pk} is {run.status}; cancel it before retrying it")
        wf = definitions.get(run.workflow, run.version)
        steps = list(run.steps.order_by("index"))
        if from_step:
            try:
                index = wf.step_index(from_step)
            except KeyError:
                names = ", ".join(s.name for s in wf.steps)
                msg = f"Workflow {wf.name} has no step {from_step!r} (steps: {names})"
                raise InvalidInput(msg, errors={"from_step": [msg]}) from None
        else:
            index = next((s.index for s in steps if s.status == StepStatus.FAILED), None)
            if index is None:
                index = next((s.index for s in steps if s.status not in STEP_DONE), None)
            if index is None:
                raise Conflict(f"Run {run.pk} has no failed step; name a step to rerun from")
        if input is not None:
            engine.run_input_check(wf=wf, input=input)
        old_input = run.input
        new_input = run.input if input is None else input
        context = dict(new_input)
        for s in steps[:index]:
            if s.status in STEP_DONE and s.output:
                context.update(s.output)
        engine.steps_reset_for_retry(run=run, index=index, input=new_input, context=context)
        if input is not None:
            kind = RunEvent.Kind.INPUT_EDITED
        elif from_step:
            kind = RunEvent.Kind.RERUN
        else:
            kind = RunEvent.Kind.RETRIED
        details: dict[str, Any] = {"from_step": wf.steps[index].name}
        if input is not None:
            details["old_input"] = old_input
            details["new_input"] = new_input
        RunEvent.objects.create(run=run, kind=kind, actor=actor[:200], step_name=wf.steps[index].name,
                                details=details)
        engine.step_activate(run=run, step=steps[index], spec=wf.steps[index], now=timezone.now())
    run.refresh_from_db()
    return run


def run_cancel(*, run_id: UUID | str, actor: str, key=None) -> WorkflowRun:
    """Cancel a run: a step already running may finish, nothing further runs."""
    now = timezone.now()
    with transaction.atomic():
        run = _locked_run(run_id, key)
        if run.status not in RUN_ACTIVE:
            raise Conflict(f"Run {run.pk} is already {run.status}")
        engine.run_cancel_steps(run=run, actor=actor, now=now)
        RunEvent.objects.create(run=run, kind=RunEvent.Kind.CANCELLED, actor=actor[:200])
        engine.run_finished_count_on_commit(run.workflow, RunStatus.CANCELLED)
    return run


def run_answer(
    *, run_id: UUID | str, actor: str, data: dict[str, Any], step: str | None = None, key=None
) -> WorkflowRun:
    """Answer the run's waiting human step (or the named one) with ``data``; the run goes on."""
    if not isinstance(data, dict):
        raise InvalidInput("data must be a JSON object", errors={"data": ["Must be a JSON object."]})
    with transaction.atomic():
        run = _locked_run(run_id, key)
        waiting = run.steps.select_for_update().filter(status=StepStatus.WAITING)
        if step:
            waiting = waiting.filter(name=step)
        step_row = waiting.order_by("index").first()
        if step_row is None:
            what = f"waiting step named {step!r}" if step else "waiting step"
            raise Conflict(f"Run {run.pk} has no {what} (run status: {run.status})")
        wf = definitions.get(run.workflow, run.version)
        spec = wf.steps[step_row.index]
        output = spec.output_from_answer(run.context, data)
        RunEvent.objects.create(run=run, kind=RunEvent.Kind.ANSWERED, actor=actor[:200],
                                step_name=step_row.name, details={"data": data})
        engine.step_advance(run=run, step=step_row, wf=wf, status=StepStatus.SUCCEEDED, output=output)
    run.refresh_from_db()
    return run


def run_start_checked(*, workflow: str, input: dict[str, Any], idempotency_key: str | None,  # noqa: A002
                      triggered_by: str, owner_key=None) -> tuple[WorkflowRun, bool]:
    """``engine.run_start``, unless the workflow refuses starts while blocked and is blocked now
    (``Conflict`` naming the missing service). A replayed Idempotency-Key still gets its run."""
    from workflows.readiness import readiness_refusal

    try:
        definition = definitions.get(workflow)
    except definitions.UnknownWorkflow:
        definition = None  # run_start answers it
    if definition is not None:
        replay = idempotency_key and WorkflowRun.objects.filter(
            workflow=workflow, idempotency_key=idempotency_key, owner_key=owner_key).exists()
        refusal = None if replay else readiness_refusal(workflow=definition)
        if refusal:
            raise Conflict(refusal)
    return engine.run_start(workflow=workflow, input=input, idempotency_key=idempotency_key,
                            triggered_by=triggered_by, owner_key=owner_key)
