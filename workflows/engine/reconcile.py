"""Reconcile: find the steps whose message is gone and send it again; time out human steps.

``workflows.reconcile`` (beat, every ``WORKFLOW_RECONCILE_EVERY_SECONDS``) calls
``steps_reconcile``: queued/retrying steps past due + grace and running steps whose lease
expired are re-sent, at most once per pass each (their due time or lease is moved before
the message goes), each recorded as a ``RunEvent``; tries held by dead processes of this
host end at once rather than a lease later.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from berrys_portal import metrics
from workflows import definitions
from workflows.engine import transitions
from workflows.engine.claims import expire_dead_holders_here
from workflows.models import STEP_CLAIMABLE, RunEvent, RunStatus, StepRun, StepStatus

logger = logging.getLogger("workflows.engine")  # one name for the engine's log lines, whatever module


def steps_reconcile(*, batch: int = 500) -> dict[str, int]:
    """Re-enqueue steps whose message is gone; time out waiting human steps. Returns counts."""
    expire_dead_holders_here()
    now = timezone.now()
    grace = timedelta(seconds=settings.WORKFLOW_RECONCILE_GRACE_SECONDS)
    counts = {"requeued": 0, "lease_expired": 0, "timed_out": 0}
    if _declare_queue() == 0:
        # The broker holds no message for the queue, so a step queued for more than a
        # moment has lost its message (broker flushed or restarted): re-send it now
        # rather than after the long grace meant for a backlog.
        grace = min(grace, timedelta(seconds=settings.WORKFLOW_RECONCILE_EMPTY_QUEUE_GRACE_SECONDS))
    overdue = list(
        StepRun.objects.filter(status__in=STEP_CLAIMABLE, next_attempt_at__lt=now - grace,
                               run__status=RunStatus.RUNNING)
        .values_list("pk", "run_id", "name", "status")[:batch]
    )
    expired = list(
        StepRun.objects.filter(status=StepStatus.RUNNING, lease_expires_at__lt=now)
        .values_list("pk", "run_id", "name", "lease_expires_at")[:batch]
    )
    for pk, run_id, name, status in overdue:
        if transitions.step_requeue_overdue(step_id=pk, run_id=run_id, step_name=name, status=status,
                                            older_than=now - grace):
            counts["requeued"] += 1
    for pk, run_id, name, lease in expired:
        if transitions.step_requeue_lost(step_id=pk, run_id=run_id, step_name=name,
                                         why="no heartbeat: its lease expired", reason="lease expired",
                                         fence={"lease_expires_at": lease}, count_lost=True):
            counts["lease_expired"] += 1
    waits = list(
        StepRun.objects.filter(status=StepStatus.WAITING, wait_until__lt=now)
        .values_list("pk", flat=True)[:batch]
    )
    for pk in waits:
        if wait_timeout(step_id=pk):
            counts["timed_out"] += 1
    metrics.record_requeue(reason="overdue", count=counts["requeued"])
    metrics.record_requeue(reason="lease_expired", count=counts["lease_expired"])
    return counts


def _declare_queue() -> int | None:
    """(Re)declare the step queue's broker binding; returns the messages waiting in it.

    An emptied Redis (restart without persistence, FLUSHDB) also loses kombu's routing
    table; publishers cache their declarations, so without this every re-enqueued
    message would be dead-lettered until the workers restart. ``None``: unknown (the
    broker is down).
    """
    from berrys_portal.celery import app

    name = getattr(settings, "WORKFLOW_QUEUE", "celery")
    try:
        queue = app.amqp.queues[name]
        with app.connection_for_write() as conn:
            bound = queue.bind(conn.default_channel)
            bound.declare()
            # Not passive: Redis has no key for an empty queue, so a passive declare fails.
            declared = bound.queue_declare()
            return getattr(declared, "message_count", None)
    except Exception:  # noqa: BLE001 - the broker may be down; the next pass tries again
        logger.warning("could not declare the workflow queue %s", name, exc_info=True)
        return None


def wait_timeout(*, step_id: int) -> bool:
    """Apply a waiting human step's ``on_timeout`` outcome."""
    now = timezone.now()
    with transaction.atomic():
        step = (StepRun.objects.select_for_update().select_related("run")
                .filter(pk=step_id, status=StepStatus.WAITING, wait_until__lt=now).first())
        if step is None:
            return False
        run = step.run
        wf = definitions.get(run.workflow, run.version)
        spec = wf.steps[step.index]
        outcome = spec.human.on_timeout
        RunEvent.objects.create(run=run, kind=RunEvent.Kind.TIMED_OUT, actor=transitions.SYSTEM,
                                step_name=step.name, details={"outcome": outcome})
        if outcome == "fail":
            transitions.step_time_out_failing(run=run, step=step,
                                              message=f"Timed out waiting for an answer (step {step.name})")
        elif outcome == "skip":
            transitions.step_advance(run=run, step=step, wf=wf, status=StepStatus.SKIPPED, output=None,
                                     error="Timed out waiting for an answer")
        else:
            output = spec.output_from_answer(run.context, dict(spec.human.default_answer))
            transitions.step_advance(run=run, step=step, wf=wf, status=StepStatus.SUCCEEDED, output=output,
                                     error="Timed out: continued with the default answer")
    return True
