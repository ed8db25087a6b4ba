"""Execution: run a claimed step's try and decide what follows (the ``run_step`` task's body).

One task claims its step, makes the call outside any transaction, and records the try and
the decision — next step, retry later, fallback / skip, the run fails — through
``transitions``. With an inline budget (``WORKFLOW_INLINE_SECONDS``) the statement that
completes a step also claims the run's next one for this worker, which runs it at once:
one statement per step boundary and no broker round trip, until the budget is spent or a
step retries, waits for a human, or fails.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from berrys_portal import metrics
from berrys_portal.errors import (
    CircuitOpenError,
    InvalidInput,
    NoEligibleServiceError,
    ServiceConnectionError,
    ServiceNotFoundError,
    ServiceResponseError,
    WorkflowError,
)
from berrys_portal.json_input import json_value_storable_check
from berrys_portal.logging import log_context, log_context_update
from registry.client import CallInfo, service_client
from workflows import definitions
from workflows.definitions import Step
from workflows.engine import transitions
from workflows.engine.attempts import Attempt, jsonable
from workflows.engine.claims import Claim, step_claim_redelivered
from workflows.engine.leases import lease_keeper, worker_process_stopping
from workflows.models import RunStatus, StepStatus, step_idempotency_key

logger = logging.getLogger("workflows.engine")  # one name for the engine's log lines, whatever module

# Errors that mean "the service is not there to call": never retried by the engine,
# they go straight to fallback / skip / fail.
UNAVAILABLE = (ServiceNotFoundError, NoEligibleServiceError, CircuitOpenError)


@dataclass(frozen=True)
class Budget:
    """How long one task may keep running the steps it claims inline (``time.monotonic()``)."""

    inline_until: float
    hard_until: float  # the task's soft time limit, less a margin

    def allows(self, spec: Step) -> bool:
        now = time.monotonic()
        return spec.kind != "human" and now < self.inline_until and now + (spec.timeout or 0) < self.hard_until


NO_INLINE = Budget(0.0, 0.0)


def step_execute(*, step_id: int, inline_seconds: float = 0.0) -> str:
    """Run one try of a step (claiming it first, so a duplicate message is a no-op); returns
    what the last try did.

    ``inline_seconds`` > 0: when the try completes the step, the run's next step is claimed
    in the same statement and run at once, for as long as this call has run less than
    ``inline_seconds`` and the next step's timeout still fits under the task's soft limit.
    """
    # Log lines inside carry step_id, and run_id once the step is claimed (scoped to this call).
    with log_context(step_id=step_id):
        claim = step_claim_redelivered(step_id)
        if claim is None:
            return "not claimed"
        started = time.monotonic()
        budget = Budget(inline_until=started + inline_seconds,
                        hard_until=started + settings.WORKFLOW_STEP_SOFT_TIME_LIMIT - 5)
        while True:
            result, claim = _run_claimed(claim, budget)
            if claim is None:
                return result


def _run_claimed(claim: Claim, budget: Budget) -> tuple[str, Claim | None]:
    """One claimed step's try; returns what happened and the next step if claimed inline."""
    step, run = claim.step, claim.run
    log_context_update(run_id=run.pk, step_id=step.pk)
    if run.status != RunStatus.RUNNING or run.cancel_requested:
        transitions.step_release(claim)  # cancelled (or finished) while the message waited
        return "run not running", None
    if step.deliveries > settings.WORKFLOW_MAX_DELIVERIES:
        return transitions.run_fail_delivery_cap(claim), None
    try:
        wf = definitions.get(run.workflow, run.version)
    except definitions.UnknownWorkflow as exc:
        return transitions.run_fail(claim, message=f"{exc} (the run is pinned to it)", attempt=None), None
    spec = wf.steps[step.index]
    attempt = Attempt(started_at=timezone.now(), call=CallInfo(method="", url=""),
                      attempt_id=claim.attempt_id)
    output: dict[str, Any] | None = None
    exc: BaseException | None = None
    lease_keeper.hold(step.pk, claim.token)
    try:
        if spec.kind == "local":
            output = _run_local(spec, run, attempt)
        else:
            key = step_idempotency_key(run_id=run.pk, step_name=step.name, generation=step.generation)
            output = _call_http(spec, run.context, attempt, key)
    except Exception as error:  # noqa: BLE001 - every failure is an attempt outcome
        exc = error
        attempt.error = error_message(error)
    except SystemExit:
        # A pool process told to stop (billiard turns SIGTERM into SystemExit: a cold
        # shutdown, or SIGTERM to the whole process group as systemd and container
        # runtimes send): hand the step back now instead of leaving it to its lease.
        worker_process_stopping()
        raise
    finally:
        lease_keeper.release(step.pk)
    attempt.finished_at = timezone.now()
    try:
        result, following = _decide(claim, wf, spec, attempt, output, exc, budget)
    except (OperationalError, InterfaceError):
        # The database connection broke (backend terminated, failover) after the call was
        # made: record it on a new connection rather than leave the step to its lease.
        # Safe to repeat: the decision is fenced by the token (a committed first try makes
        # this one "lost lease"). Not inline: if the first try committed, the next step is
        # claimed by a dead statement, and its message is what finds it again.
        logger.warning("recording step %s failed on a broken connection; retrying once", step.pk)
        connection.close()
        result, following = _decide(claim, wf, spec, attempt, output, exc, NO_INLINE)
    if result == "lost lease":
        transitions.late_refusal_record(claim, attempt)
    metrics.observe_step(
        workflow=run.workflow, step=step.name, outcome=attempt.outcome or result,
        duration_seconds=(attempt.finished_at - attempt.started_at).total_seconds(),
    )
    return result, following


def _run_local(spec: Step, run, attempt: Attempt) -> dict[str, Any]:
    attempt.call = CallInfo(method="LOCAL", url="")
    started = time.perf_counter()
    parent = transitions.parent_run.set(run.id)
    try:
        return dict(spec.local(run.context) or {})
    finally:
        transitions.parent_run.reset(parent)
        attempt.call.latency_ms = (time.perf_counter() - started) * 1000


def _call_http(spec: Step, ctx: dict, attempt: Attempt, key: str) -> dict[str, Any]:
    try:
        path = spec.render_path(ctx)
        body = spec.request_body(ctx)
    except Exception as exc:
        raise WorkflowError(f"Could not build the request: {type(exc).__name__}: {exc}") from exc
    attempt.call, attempt.payload = CallInfo(method=spec.method, url=path), jsonable(body)
    # The same key on every redelivery and retry of this effect: a service that honours it
    # answers a repeat with its first answer instead of acting twice.
    headers = {spec.idempotency_header: key} if spec.idempotency_header else None
    outcome = service_client.call(spec.method, service=spec.service_type, endpoint=path, data=body,
                                  timeout=spec.timeout, headers=headers,
                                  retries=0)  # the engine owns retries: one StepAttempt per try
    if outcome.call is not None:
        attempt.call = outcome.call
    if outcome.error is not None:
        raise outcome.error
    answer = outcome.result.body
    try:
        # PostgreSQL's jsonb refuses NUL and lone surrogates: an answer carrying them would crash
        # every delivery of this step when its output is stored. It is the service's error.
        json_value_storable_check(answer)
    except InvalidInput as exc:
        where = "; ".join(f"{place}: {' '.join(msgs)}" for place, msgs in (exc.errors or {}).items())
        raise WorkflowError(f"The service's answer cannot be stored ({where})") from None
    try:
        return spec.output_from_response(ctx, answer)
    except Exception as exc:
        raise WorkflowError(f"Could not read the response: {type(exc).__name__}: {exc}") from exc


def _decide(claim: Claim, wf, spec: Step, attempt: Attempt, output, exc, budget: Budget
            ) -> tuple[str, Claim | None]:
    """Record the try and move the run on; returns what happened and the next step when it
    was claimed inline."""
    step = claim.step
    attempt_number = step.attempt_count + 1
    following = wf.steps[step.index + 1] if step.index + 1 < len(wf.steps) else None
    inline = following is not None and budget.allows(following)
    if exc is None:
        attempt.outcome = "succeeded"
        return transitions.step_complete(claim, wf=wf, attempt=attempt, status=StepStatus.SUCCEEDED,
                                         output=output, inline=inline)
    retryable = not isinstance(exc, (*UNAVAILABLE, WorkflowError)) and spec.retry.is_retryable(
        exc, attempt.call.status
    )
    if retryable and attempt_number < spec.retry.max_attempts:
        attempt.outcome = "retry"
        return transitions.step_retry(claim, attempt=attempt, delay=spec.retry.delay_after(attempt_number)), None
    # The step cannot complete: fallback, skip, or fail the run.
    cause = attempt.error
    if spec.fallback is not None:
        try:
            fallback_output = spec.fallback(claim.run.context)
        except Exception as fb_exc:  # noqa: BLE001 - a broken fallback fails like the step
            fallback_output = None
            cause += f"; the fallback raised {type(fb_exc).__name__}: {fb_exc}"
        if fallback_output is not None:
            attempt.outcome = "fallback"
            return transitions.step_complete(claim, wf=wf, attempt=attempt, status=StepStatus.FALLBACK,
                                             output=dict(fallback_output), error=cause, inline=inline)
    if not spec.required:
        attempt.outcome = "skipped"
        return transitions.step_complete(claim, wf=wf, attempt=attempt, status=StepStatus.SKIPPED, output=None,
                                         error=cause, inline=inline)
    attempt.outcome = "failed"
    tries = f"after {attempt_number} attempt{'s' if attempt_number != 1 else ''}"
    return transitions.run_fail(claim, message=f"{cause} (step {step.name}, {tries})", attempt=attempt), None


def error_message(exc: BaseException) -> str:
    """The cause in the integration guide's wording, e.g. ``Service not found: No service of type X found``."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, ServiceNotFoundError):
        return f"Service not found: {text}"
    if isinstance(exc, NoEligibleServiceError):
        return f"No eligible service: {text}"
    if isinstance(exc, CircuitOpenError):
        return f"Service unavailable: {text}"
    if isinstance(exc, ServiceConnectionError):
        return f"Connection error: {text}"
    if isinstance(exc, ServiceResponseError):
        return f"Service error: {text}"
    if isinstance(exc, WorkflowError):
        return text
    return f"{type(exc).__name__}: {text}"
