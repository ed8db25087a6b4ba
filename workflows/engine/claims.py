"""Claims: a worker takes a step (conditional UPDATE, so a duplicate message is a no-op), and
finds out when the process holding one is dead.

A claim bumps ``attempts_total`` (the try's number and the fencing token its completion
must still match), leases the step for ``WORKFLOW_STEP_LEASE_SECONDS``, closes the
previous try as "worker lost" if it was left open, and writes this try's attempt row as
"sent" before any request leaves.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from workflows.engine import statements
from workflows.models import (
    STEP_CLAIMABLE,
    AttemptOutcome,
    RunStatus,
    StepAttempt,
    StepRun,
    StepStatus,
    WorkflowRun,
)

HOSTNAME = socket.gethostname()
WORKER_LOST = "Outcome unknown — worker lost ({why}); the call may or may not have reached the service"


def worker_id() -> str:
    """``host:pid`` of this process. Not a module constant: the pool processes are forked
    after import, and a dead pool process must be told apart from its live parent."""
    return f"{HOSTNAME}:{os.getpid()}"


@dataclass
class Claim:
    """A step this worker holds: the step (with its run) and its try's "sent" attempt row.

    ``attempt_id`` is None when nothing will be sent (the run is no longer running, or the
    delivery cap is reached). ``step.attempts_total`` is the fencing token.
    """

    step: StepRun
    attempt_id: int | None

    @property
    def run(self) -> WorkflowRun:
        return self.step.run

    @property
    def token(self) -> int:
        return self.step.attempts_total


def step_claim(step_id: int) -> Claim | None:
    """Take the step for this worker; ``None`` if someone else has it or it is not due."""
    if statements.hot_sql():
        return _claim_sql(step_id)
    return claim_orm(step_id)


def _claim_sql(step_id: int) -> Claim | None:
    now = timezone.now()
    params = {"id": step_id, "now": now, "due": now + timedelta(seconds=1),
              "lease": now + timedelta(seconds=settings.WORKFLOW_STEP_LEASE_SECONDS),
              "worker": worker_id()[:200], "cap": settings.WORKFLOW_MAX_DELIVERIES,
              "lost": WORKER_LOST.format(why="its lease expired")}
    row = statements.hot_statement(statements.CLAIM_SQL, params)
    if row is None:
        return None
    (index, name, deliveries, attempt_count, attempts_total, generation, run_id, workflow, version, status,
     cancel, ctx, attempt_id, _lost) = row
    if isinstance(ctx, str | bytes):  # Django's psycopg setup returns jsonb as text
        ctx = json.loads(ctx)
    run = WorkflowRun(id=run_id, workflow=workflow, version=version, status=status,
                      cancel_requested=cancel, context=ctx)
    step = StepRun(id=step_id, run=run, index=index, name=name, deliveries=deliveries,
                   attempt_count=attempt_count, attempts_total=attempts_total, generation=generation,
                   status=StepStatus.RUNNING)
    return Claim(step, attempt_id)


def claim_orm(step_id: int) -> Claim | None:
    """The claim through the ORM (SQLite; or inside a transaction that queued the step)."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.WORKFLOW_STEP_LEASE_SECONDS)
    with transaction.atomic():
        claimed = StepRun.objects.filter(
            # A retry's message must not run it early (a stale duplicate could); 1 s covers clock skew.
            Q(status__in=STEP_CLAIMABLE, next_attempt_at__lte=now + timedelta(seconds=1))
            | Q(status=StepStatus.RUNNING, lease_expires_at__lt=now),
            pk=step_id,
        ).update(
            status=StepStatus.RUNNING, lease_expires_at=lease, deliveries=F("deliveries") + 1,
            attempts_total=F("attempts_total") + 1, started_at=Coalesce(F("started_at"), Value(now)),
        )
        if claimed != 1:
            return None
        step = StepRun.objects.select_related("run").get(pk=step_id)
        StepAttempt.objects.filter(step_id=step_id, outcome=AttemptOutcome.SENT,
                                   number__lt=step.attempts_total).update(
            outcome=AttemptOutcome.WORKER_LOST, error=WORKER_LOST.format(why="its lease expired"),
            finished_at=now)
        attempt_id = None
        run = step.run
        if (run.status == RunStatus.RUNNING and not run.cancel_requested
                and step.deliveries <= settings.WORKFLOW_MAX_DELIVERIES):
            attempt_id = StepAttempt.objects.create(
                step_id=step_id, number=step.attempts_total, outcome=AttemptOutcome.SENT,
                worker=worker_id()[:200], started_at=now,
            ).pk
    return Claim(step, attempt_id)


def step_claim_redelivered(step_id: int) -> Claim | None:
    """The claim of a message that may be a re-delivery after its worker died on this host.

    Celery re-delivers a killed pool process's message at once (``acks_late``): take the
    step over now rather than after its lease — or, when the step is done, the later step
    of its run that the dead worker was running inline.
    """
    claim = step_claim(step_id)
    if claim is None and _expire_if_holder_died(step_id):
        claim = step_claim(step_id)
    if claim is None:
        successor = _successor_held_by_dead_worker(step_id)
        claim = step_claim(successor) if successor is not None else None
    return claim


def process_dead_here(worker: str) -> bool:
    """True if ``worker`` ("host:pid") names a process on this host that no longer runs.

    Only a same-host question can be answered without waiting (a process on another host
    is known dead only when its lease expires). A zombie counts as dead; a pid reused by
    another process counts as alive, which only means waiting for the lease.
    """
    host, _, pid = worker.rpartition(":")
    if host != HOSTNAME or not pid.isdigit():
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False


def _expire_if_holder_died(step_id: int) -> bool:
    """Expire the lease of a running step whose try in flight belongs to a dead local process."""
    row = (StepAttempt.objects.filter(step_id=step_id, outcome=AttemptOutcome.SENT)
           .order_by("-number").values_list("worker", "number").first())
    if row is None or not process_dead_here(row[0]):
        return False
    return StepRun.objects.filter(pk=step_id, status=StepStatus.RUNNING, attempts_total=row[1]).update(
        lease_expires_at=timezone.now() - timedelta(microseconds=1)) == 1


def _successor_held_by_dead_worker(step_id: int) -> int | None:
    """The running step after ``step_id`` in its run, if a dead process of this host holds it."""
    row = StepRun.objects.filter(pk=step_id).values_list("run_id", "index").first()
    if row is None:
        return None
    later = (StepRun.objects.filter(run_id=row[0], index__gt=row[1], status=StepStatus.RUNNING)
             .values_list("pk", flat=True).first())
    if later is not None and _expire_if_holder_died(later):
        return later
    return None


def expire_dead_holders_here() -> int:
    """The reconciler's half of the same: every try in flight held by a dead process of this host."""
    in_flight = StepAttempt.objects.filter(
        outcome=AttemptOutcome.SENT, worker__startswith=HOSTNAME + ":",
    ).values_list("step_id", "worker", "number")[:500]
    return sum(_expire_if_holder_died(step_id) for step_id, worker, _ in in_flight if process_dead_here(worker))
