"""The workflow engine: start a run, execute a step's tries, move the run on, reconcile.

Execution model
    ``run_start`` creates the run and all its StepRuns in one transaction and enqueues
    the first step with ``transaction.on_commit`` (a rolled-back start never runs).
    Each Celery message means "try step X" (``workflows.tasks.run_step``).
    ``step_execute`` claims the step with a conditional UPDATE (only a queued/retrying
    step, or a running one whose lease expired, can be claimed, so a duplicate message
    is a no-op) that also writes the try's attempt row as "sent", makes the call outside
    any transaction, then records the try and the decision (next step, retry later,
    fallback / skip, run fails). Completing a step claims the next one for the same task
    within ``WORKFLOW_INLINE_SECONDS`` (one statement per step boundary on PostgreSQL);
    past that, the next step gets a message after commit.

Faults
    Celery runs the task with ``acks_late`` and ``reject_on_worker_lost``. A message the
    broker lost (Redis restart, worker SIGKILL) is found again by ``steps_reconcile``
    (beat, every 5 s): queued/retrying steps past due + grace and running steps whose
    lease expired are re-enqueued, at most once per pass, each recorded as a RunEvent.
    ``deliveries`` counts claims since the last finished attempt; a step that keeps
    killing its worker fails the run once it exceeds ``WORKFLOW_MAX_DELIVERIES``.

Modules, by job
    ``transitions``  the one write path for run and step state (start, activate, advance,
                     complete, retry, fail, requeue); operator actions call it too
    ``claims``       taking a step, and telling a dead holder from a live one
    ``execution``    a claimed step's try and the decision after it (the task's body)
    ``leases``       the heartbeat thread and the hand-back at worker shutdown
    ``reconcile``    lost messages, expired leases, human-step timeouts
    ``statements``   the two PostgreSQL statements of the hot path (and why they exist)
    ``attempts``     one try's record: the client's ``CallInfo`` plus the engine's verdict
"""

from __future__ import annotations

from workflows.engine.claims import WORKER_LOST, worker_id
from workflows.engine.execution import error_message, step_execute
from workflows.engine.leases import lease_keeper, worker_process_stopping
from workflows.engine.reconcile import steps_reconcile, wait_timeout
from workflows.engine.transitions import (
    run_cancel_steps,
    run_finished_count_on_commit,
    run_input_check,
    run_start,
    step_activate,
    step_advance,
    steps_reset_for_retry,
)

__all__ = [
    "WORKER_LOST",
    "error_message",
    "lease_keeper",
    "run_cancel_steps",
    "run_finished_count_on_commit",
    "run_input_check",
    "run_start",
    "step_activate",
    "step_advance",
    "step_execute",
    "steps_reconcile",
    "steps_reset_for_retry",
    "wait_timeout",
    "worker_id",
    "worker_process_stopping",
]
