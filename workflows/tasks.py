"""Celery tasks of the workflow engine: thin wrappers over ``workflows.engine``."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from workflows import engine


# A broken DB connection before the claim (backend terminated, failover) retries the message
# in a second rather than leaving the step to the reconciler: claiming is idempotent.
@shared_task(name="workflows.run_step", acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             soft_time_limit=settings.WORKFLOW_STEP_SOFT_TIME_LIMIT, time_limit=settings.WORKFLOW_STEP_TIME_LIMIT,
             autoretry_for=(OperationalError, InterfaceError), max_retries=5, default_retry_delay=1,
             retry_backoff=False)
def run_step(step_id: int) -> str:
    """Try one step of a run once (claiming it first, so duplicates are harmless), and the
    steps after it while ``WORKFLOW_INLINE_SECONDS`` allows (claimed at each step boundary)."""
    return engine.step_execute(step_id=step_id, inline_seconds=settings.WORKFLOW_INLINE_SECONDS)


@shared_task(name="workflows.reconcile", ignore_result=True)
def reconcile() -> dict[str, int]:
    """Re-enqueue steps whose message was lost; time out waiting human steps."""
    return engine.steps_reconcile()

