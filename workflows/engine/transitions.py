"""Transitions: the one write path for run and step state.

Every change of a step's or a run's status goes through a function here — the engine's
own (start, complete, retry, fail, requeue) and the operator actions of
``workflows/services.py`` (retry/rerun: ``steps_reset_for_retry`` then ``step_activate``;
cancel: ``run_cancel_steps``; answers and human timeouts: ``step_advance``). Claiming a step
(``running`` + lease) is ``claims.py``'s job and the lease heartbeat ``leases.py``'s. Each is a conditional UPDATE (fenced by the step's status and, for a
running step, its token ``attempts_total``), writes its ``RunEvent`` where one is due,
and sends the next message only after commit (``transaction.on_commit``).

On PostgreSQL a step boundary is one statement (``statements.BOUNDARY_SQL``); elsewhere,
and when the next step is human, the same rules run as ORM queries in one transaction.

Near 480 lines on purpose: the point of this module is that every status write of a run
or a step (but the claim) is in it, so a reader checks one file for the rules;
``tests/portal/test_architecture.py`` fails on such a write anywhere else.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from berrys_portal import metrics
from berrys_portal.errors import InvalidInput
from workflows import definitions
from workflows.definitions import Step, Workflow
from workflows.engine import statements
from workflows.engine.attempts import Attempt, attempt_fields
from workflows.engine.claims import WORKER_LOST, Claim, claim_orm, worker_id
from workflows.models import (
    AttemptOutcome,
    RunEvent,
    RunStatus,
    StepAttempt,
    StepRun,
    StepStatus,
    WorkflowRun,
)

logger = logging.getLogger("workflows.engine")  # one name for the engine's log lines, whatever module

SYSTEM = "system"
# The run whose local step is executing, if any: a run that step starts gets the same owner key.
parent_run: ContextVar[Any] = ContextVar("workflows_parent_run", default=None)


# --------------------------------------------------------------------------- messages


def _queue() -> str:
    return getattr(settings, "WORKFLOW_QUEUE", "celery")


def _enqueue(step_id: int, countdown: float | None = None) -> None:
    from workflows.tasks import run_step

    options: dict[str, Any] = {"queue": _queue()}
    if countdown and countdown > 0:
        options["countdown"] = countdown
    run_step.apply_async(args=[step_id], **options)


def enqueue_on_commit(step_id: int, countdown: float | None = None) -> None:
    # robust: a broker outage must not turn a committed start or step into an error; the
    # step is queued in the database and the reconciler sends its message later.
    transaction.on_commit(lambda: _enqueue(step_id, countdown), robust=True)


def run_finished_count_on_commit(workflow: str, status: str) -> None:
    transaction.on_commit(lambda: metrics.record_run_finished(workflow=workflow, status=status))


# --------------------------------------------------------------------------- start


def run_input_check(*, wf, input: Any) -> None:  # noqa: A002 - the API's field name
    """Raise ``InvalidInput`` unless ``input`` is a JSON object with every key ``wf`` needs."""
    if not isinstance(input, dict):
        raise InvalidInput("input must be a JSON object", errors={"input": ["Must be a JSON object."]})
    missing = wf.missing_inputs(input)
    if missing:
        msg = f"Workflow {wf.name} needs input key(s): {', '.join(missing)}"
        raise InvalidInput(msg, errors={"input": [msg]})


def run_start(
    *,
    workflow: str,
    input: dict[str, Any],  # noqa: A002 - the API's field name
    idempotency_key: str | None = None,
    triggered_by: str,
    owner_key=None,
) -> tuple[WorkflowRun, bool]:
    """Create a run (and all its steps) and enqueue its first step after commit.

    Returns ``(run, created)``: with an ``idempotency_key`` this caller (``owner_key``,
    the API key starting it; None for operators and commands) already used for this
    workflow, the existing run and ``False``. Raises ``InvalidInput`` for an unknown
    workflow or missing inputs.
    """
    try:
        wf = definitions.get(workflow)
    except definitions.UnknownWorkflow as exc:
        raise InvalidInput(str(exc), errors={"workflow": [str(exc)]}) from None
    run_input_check(wf=wf, input=input)
    if idempotency_key and len(idempotency_key) > 200:
        msg = "Idempotency-Key must be at most 200 characters"
        raise InvalidInput(msg, errors={"Idempotency-Key": [msg]})
    owner_id = owner_key.pk if owner_key is not None else None
    if owner_id is None and (parent := parent_run.get()) is not None:
        # Started by a run's local step: the child belongs to the key that started the parent.
        owner_id = WorkflowRun.objects.filter(pk=parent).values_list("owner_key_id", flat=True).first()
    same_key = WorkflowRun.objects.filter(workflow=wf.name, idempotency_key=idempotency_key,
                                          owner_key_id=owner_id)
    if idempotency_key:
        existing = same_key.first()
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
            run = _create_run(wf, input, idempotency_key, triggered_by, owner_id)
    except IntegrityError:
        # A concurrent request with the same key won the race.
        existing = same_key.first()
        if existing is None:
            raise
        return existing, False
    return run, True


def _create_run(wf: Workflow, input: dict, idempotency_key: str | None, triggered_by: str,  # noqa: A002
                owner_id: int | None = None) -> WorkflowRun:
    now = timezone.now()
    run = WorkflowRun.objects.create(
        workflow=wf.name, version=wf.version, status=RunStatus.RUNNING, input=input,
        context=dict(input), idempotency_key=idempotency_key or None,
        triggered_by=triggered_by[:200], started_at=now, owner_key_id=owner_id,
    )
    first_queued = wf.steps[0].kind != "human"
    steps = StepRun.objects.bulk_create([
        StepRun(run=run, index=i, name=s.name, kind=s.kind, service_type=s.service_type or "",
                required=s.required,
                # The first step is born queued (one UPDATE less per start); a human one waits.
                **({"status": StepStatus.QUEUED, "next_attempt_at": now} if i == 0 and first_queued else {}))
        for i, s in enumerate(wf.steps)
    ])
    RunEvent.objects.create(run=run, kind=RunEvent.Kind.STARTED, actor=triggered_by[:200],
                            details={"version": wf.version})
    if first_queued:
        enqueue_on_commit(steps[0].pk)
    else:
        step_activate(run=run, step=steps[0], spec=wf.steps[0], now=now)
    return run


# --------------------------------------------------------------------------- activate / advance


def step_activate(*, run: WorkflowRun, step: StepRun, spec: Step, now: datetime, enqueue: bool = True) -> None:
    """Make ``step`` the run's current step: queue it (its message after commit) or, for a
    human step, wait for an answer. ``enqueue=False``: the caller claims it in this transaction.
    """
    if spec.kind == "human":
        wait_until = now + timedelta(seconds=spec.human.timeout) if spec.human.timeout else None
        StepRun.objects.filter(pk=step.pk).update(
            status=StepStatus.WAITING, started_at=now, wait_until=wait_until, next_attempt_at=None,
            error="", output=None, finished_at=None,
        )
        WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.WAITING)
        return
    StepRun.objects.filter(pk=step.pk).update(
        status=StepStatus.QUEUED, next_attempt_at=now, lease_expires_at=None, error="",
        output=None, finished_at=None,
    )
    if enqueue:
        enqueue_on_commit(step.pk)


def step_advance(*, run: WorkflowRun, step: StepRun, wf: Workflow, status: str,
                 output: dict | None, error: str = "") -> None:
    """Finish a step that is not running (a human answer or timeout) and activate the next one.

    Call inside a transaction holding the step's row lock.
    """
    now = timezone.now()
    context = dict(run.context)
    if output:
        context.update(output)
    StepRun.objects.filter(pk=step.pk).update(status=status, output=output, error=error,
                                              finished_at=now, wait_until=None)
    next_index = step.index + 1
    if next_index >= len(wf.steps):
        WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, context=context,
                                                     finished_at=now)
        run_finished_count_on_commit(run.workflow, RunStatus.SUCCEEDED)
        return
    WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, context=context)
    run.context = context
    next_step = StepRun.objects.get(run_id=run.pk, index=next_index)
    step_activate(run=run, step=next_step, spec=wf.steps[next_index], now=now)


def steps_reset_for_retry(*, run: WorkflowRun, index: int, input: dict[str, Any],  # noqa: A002
                          context: dict[str, Any]) -> None:
    """An operator retry/rerun: steps from ``index`` on go back to pending (a new generation,
    so a new Idempotency-Key) and the run runs again with ``input`` and ``context``.

    Call inside a transaction holding the run's row lock; then ``step_activate`` the step at ``index``.
    """
    StepRun.objects.filter(run=run, index__gte=index).update(
        status=StepStatus.PENDING, output=None, error="", attempt_count=0, deliveries=0,
        next_attempt_at=None, lease_expires_at=None, wait_until=None, started_at=None,
        finished_at=None,
        # A deliberate operator action: a new effect, so a new Idempotency-Key.
        generation=F("generation") + 1,
    )
    run.input, run.context = input, context
    run.status, run.error, run.failed_step = RunStatus.RUNNING, "", ""
    run.finished_at, run.cancel_requested = None, False
    run.save(update_fields=["input", "context", "status", "error", "failed_step", "finished_at",
                            "cancel_requested"])


def run_cancel_steps(*, run: WorkflowRun, actor: str, now: datetime) -> None:
    """An operator cancel: queued, retrying and waiting steps are skipped, the run is cancelled
    (a step already running may finish; ``cancel_requested`` stops what would follow it).

    Call inside a transaction holding the run's row lock.
    """
    StepRun.objects.filter(
        run=run, status__in=[StepStatus.QUEUED, StepStatus.RETRYING, StepStatus.WAITING]
    ).update(status=StepStatus.SKIPPED, error=f"Run cancelled by {actor}", finished_at=now,
             next_attempt_at=None, wait_until=None)
    run.status, run.cancel_requested, run.finished_at = RunStatus.CANCELLED, True, now
    run.error = f"Cancelled by {actor}"
    run.save(update_fields=["status", "cancel_requested", "finished_at", "error"])


# --------------------------------------------------------------------------- a try's outcome


def step_complete(claim: Claim, *, wf: Workflow, attempt: Attempt, status: str, output: dict | None,
                  error: str = "", inline: bool = False) -> tuple[str, Claim | None]:
    """The claimed step is done (succeeded / fallback / skipped): record the try, merge its
    output into the run's context and move on; returns what happened and, with ``inline``,
    the run's next step claimed for this worker (else it is queued and sent a message)."""
    step, run = claim.step, claim.run
    now = timezone.now()
    context = dict(run.context)
    if output:
        context.update(output)
    next_index = step.index + 1
    last = next_index >= len(wf.steps)
    inline = inline and not last and wf.steps[next_index].kind != "human"
    if statements.hot_sql() and attempt.attempt_id is not None and (last or wf.steps[next_index].kind != "human"):
        return _complete_sql(claim, attempt, status, output, error, context, now, next_index, last, inline)
    with transaction.atomic():
        if not _finish_running(claim, status=status, output=output, error=error, now=now, tried=True):
            return "lost lease", None
        _save_attempt(step, attempt)
        if last:
            if WorkflowRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
                status=RunStatus.SUCCEEDED, context=context, finished_at=now
            ):
                run_finished_count_on_commit(run.workflow, RunStatus.SUCCEEDED)
            return str(status), None
        moved = WorkflowRun.objects.filter(
            pk=run.pk, status=RunStatus.RUNNING, cancel_requested=False
        ).update(context=context)
        if moved != 1:
            # Cancelled meanwhile: the running step finished, nothing further runs.
            return f"{status}; run cancelled", None
        next_step = StepRun.objects.only("pk").get(run_id=run.pk, index=next_index)
        run.context = context
        step_activate(run=run, step=next_step, spec=wf.steps[next_index], now=now, enqueue=not inline)
        if inline:
            claimed = claim_orm(next_step.pk)  # a savepoint in this transaction
            if claimed is None:
                enqueue_on_commit(next_step.pk)
            return str(status), claimed
    return str(status), None


def _complete_sql(claim: Claim, attempt: Attempt, status, output, error, context, now, next_index, last,
                  inline) -> tuple[str, Claim | None]:
    from psycopg.types.json import Jsonb

    step, run = claim.step, claim.run
    fields = attempt_fields(attempt)
    params = {
        "status": str(status), "output": Jsonb(output) if output is not None else None, "error": error,
        "now": now, "step": step.pk, "token": claim.token, "attempt": attempt.attempt_id,
        "service_id": fields["service_id"], "service_name": fields["service_name"],
        "method": fields["request_method"], "url": fields["request_url"],
        "request_body": Jsonb(fields["request_body"]) if fields["request_body"] is not None else None,
        "response_status": fields["response_status"], "response_body": fields["response_body"],
        "latency_ms": fields["latency_ms"], "attempt_error": fields["error"], "outcome": fields["outcome"],
        "worker": fields["worker"], "started_at": fields["started_at"], "finished_at": fields["finished_at"],
        "context": Jsonb(context), "last": last, "run": run.pk, "next": next_index, "inline": inline,
        "lease": now + timedelta(seconds=settings.WORKFLOW_STEP_LEASE_SECONDS),
        "cap": settings.WORKFLOW_MAX_DELIVERIES, "lost": WORKER_LOST.format(why="its lease expired"),
    }
    (step_done, run_moved, next_id, name, deliveries, attempt_count, attempts_total, generation, attempt_id,
     _lost) = statements.hot_statement(statements.BOUNDARY_SQL, params)
    if not step_done:
        return "lost lease", None
    if last and run_moved:
        run_finished_count_on_commit(run.workflow, RunStatus.SUCCEEDED)
    if next_id is None:
        if not last and not run_moved:
            return f"{status}; run cancelled", None
        return str(status), None
    if not inline:
        enqueue_on_commit(next_id)  # autocommit: runs now, after the statement committed
        return str(status), None
    run.context = context
    claimed = StepRun(id=next_id, run=run, index=next_index, name=name, deliveries=deliveries,
                      attempt_count=attempt_count, attempts_total=attempts_total, generation=generation,
                      status=StepStatus.RUNNING)
    return str(status), Claim(claimed, attempt_id)


def step_retry(claim: Claim, *, attempt: Attempt, delay: float) -> str:
    """The try failed and the step gets another after ``delay`` seconds."""
    now = timezone.now()
    with transaction.atomic():
        updated = StepRun.objects.filter(pk=claim.step.pk, status=StepStatus.RUNNING,
                                         attempts_total=claim.token).update(
            status=StepStatus.RETRYING, next_attempt_at=now + timedelta(seconds=delay),
            attempt_count=F("attempt_count") + 1,
            deliveries=0, lease_expires_at=None, error=attempt.error,
        )
        if updated != 1:
            return "lost lease"
        _save_attempt(claim.step, attempt)
        # Longer waits than the broker's visibility timeout would be redelivered early:
        # the reconciler picks those up when they are due.
        if delay < settings.CELERY_VISIBILITY_TIMEOUT:
            enqueue_on_commit(claim.step.pk, delay)
    return "retry"


def run_fail(claim: Claim, *, message: str, attempt: Attempt | None) -> str:
    """The claimed step cannot complete (or its run cannot go on): step and run fail."""
    step, run = claim.step, claim.run
    now = timezone.now()
    with transaction.atomic():
        if not _finish_running(claim, status=StepStatus.FAILED, output=None, error=message, now=now,
                               tried=attempt is not None, keep_deliveries=True):
            return "lost lease"
        if attempt is not None:
            _save_attempt(step, attempt)
        if WorkflowRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=RunStatus.FAILED, error=message, failed_step=step.name, finished_at=now
        ):
            run_finished_count_on_commit(run.workflow, RunStatus.FAILED)
    logger.warning("workflow run %s failed: %s", run.pk, message)
    return "failed"


def run_fail_delivery_cap(claim: Claim) -> str:
    step = claim.step
    cap = settings.WORKFLOW_MAX_DELIVERIES
    message = (
        f"Delivery cap reached: step {step.name} was delivered {step.deliveries} times without "
        f"finishing an attempt (its worker died each time); WORKFLOW_MAX_DELIVERIES={cap}"
    )
    with transaction.atomic():
        RunEvent.objects.create(run_id=claim.run.pk, kind=RunEvent.Kind.DELIVERY_CAP, actor=SYSTEM,
                                step_name=step.name, details={"deliveries": step.deliveries})
        return run_fail(claim, message=message, attempt=None)


def step_release(claim: Claim) -> None:
    """The run was cancelled (or finished) while the message waited: let the step go unrun."""
    StepRun.objects.filter(pk=claim.step.pk, attempts_total=claim.token).update(
        status=StepStatus.SKIPPED, error="Run is no longer running", lease_expires_at=None,
        finished_at=timezone.now(),
    )


def step_time_out_failing(*, run: WorkflowRun, step: StepRun, message: str) -> None:
    """A human step's wait ran out and its definition says fail (inside the step's row lock)."""
    now = timezone.now()
    StepRun.objects.filter(pk=step.pk).update(status=StepStatus.FAILED, error=message, finished_at=now)
    WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, error=message, failed_step=step.name,
                                                 finished_at=now)


def _finish_running(claim: Claim, *, status: str, output, error: str, now: datetime, tried: bool,
                    keep_deliveries: bool = False) -> bool:
    """The fenced UPDATE that ends a running step; False when the token no longer matches."""
    changes: dict[str, Any] = dict(status=status, output=output, error=error, finished_at=now,
                                   lease_expires_at=None, attempt_count=F("attempt_count") + (1 if tried else 0))
    if not keep_deliveries:
        changes["deliveries"] = 0
    return StepRun.objects.filter(pk=claim.step.pk, status=StepStatus.RUNNING,
                                  attempts_total=claim.token).update(**changes) == 1


def _save_attempt(step: StepRun, attempt: Attempt) -> None:
    """Complete the try's "sent" row (inside the transaction that fenced the step)."""
    fields = attempt_fields(attempt)
    if attempt.attempt_id is not None:
        StepAttempt.objects.filter(pk=attempt.attempt_id).update(**fields)
    else:
        StepAttempt.objects.create(step_id=step.pk, number=step.attempts_total, **fields)


# --------------------------------------------------------------------------- lost tries


def step_requeue_lost(*, step_id: int, run_id, step_name: str, why: str, reason: str, fence: dict[str, Any],
                      count_lost: bool = False) -> bool:
    """Give a running step whose worker is gone (or stopping) back to the queue, its open try
    closed as worker_lost, a REQUEUED event written and its message sent after commit.

    ``fence``: the conditions the step must still meet (its token, or the lease seen
    expired). False if it no longer does. ``why`` goes into the closed try's error,
    ``reason`` (and with ``count_lost`` the number of tries closed) into the event.
    """
    now = timezone.now()
    with transaction.atomic():
        if StepRun.objects.filter(pk=step_id, status=StepStatus.RUNNING, **fence).update(
            status=StepStatus.QUEUED, next_attempt_at=now, lease_expires_at=None
        ) != 1:
            return False
        lost = StepAttempt.objects.filter(step_id=step_id, outcome=AttemptOutcome.SENT).update(
            outcome=AttemptOutcome.WORKER_LOST, finished_at=now, error=WORKER_LOST.format(why=why))
        details: dict[str, Any] = {"reason": reason}
        if count_lost:
            details["worker_lost"] = lost
        RunEvent.objects.create(run_id=run_id, kind=RunEvent.Kind.REQUEUED, actor=SYSTEM, step_name=step_name,
                                details=details)
        enqueue_on_commit(step_id)
    return True


def step_requeue_overdue(*, step_id: int, run_id, step_name: str, status: str, older_than: datetime) -> bool:
    """Re-send a queued/retrying step whose message is gone. Pushing its due time forward keeps
    the next reconciler pass from sending it again."""
    with transaction.atomic():
        if StepRun.objects.filter(pk=step_id, status=status, next_attempt_at__lt=older_than).update(
            next_attempt_at=timezone.now()
        ) != 1:
            return False
        RunEvent.objects.create(run_id=run_id, kind=RunEvent.Kind.REQUEUED, actor=SYSTEM,
                                step_name=step_name, details={"reason": f"{status} past due"})
        enqueue_on_commit(step_id)
    return True


def late_refusal_record(claim: Claim, attempt: Attempt) -> None:
    """This worker lost the step's lease while it ran (partitioned, stalled): its result was
    refused by the fencing token. Say so on the run; the step itself is someone else's now."""
    step = claim.step
    logger.warning("late completion refused: step %s of run %s was taken over (fencing token %s)",
                   step.pk, claim.run.pk, claim.token)
    try:
        RunEvent.objects.create(run_id=claim.run.pk, kind=RunEvent.Kind.LATE_REFUSED, actor=worker_id()[:200],
                                step_name=step.name,
                                details={"attempt": claim.token, "outcome": attempt.outcome,
                                         "status": attempt.call.status})
    except Exception:  # noqa: BLE001 - only a note; the refusal itself already happened
        logger.warning("could not record the refused completion", exc_info=True)
