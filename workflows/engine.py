"""The workflow engine: start a run, execute one step attempt, move the run on, reconcile.

Execution model
    ``run_start`` creates the run and all its StepRuns in one transaction and enqueues
    the first step with ``transaction.on_commit`` (a rolled-back start never runs).
    Each Celery message means "try step X once" (``workflows.tasks.run_step``).
    ``step_execute`` claims the step with a conditional UPDATE (only a queued/retrying
    step, or a running one whose lease expired, can be claimed, so a duplicate message
    is a no-op), makes the call outside any transaction, then records the attempt and
    the decision (next step, retry later, fallback / skip, run fails) in one short
    transaction. The next message is sent only after that commit.

Faults
    Celery runs the task with ``acks_late`` and ``reject_on_worker_lost``. A message the
    broker lost (Redis restart, worker SIGKILL) is found again by ``steps_reconcile``
    (beat, every 15 s): queued/retrying steps past due + grace and running steps whose
    lease expired are re-enqueued, at most once per pass, each recorded as a RunEvent.
    ``deliveries`` counts claims since the last finished attempt; a step that keeps
    killing its worker fails the run once it exceeds ``WORKFLOW_MAX_DELIVERIES``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
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
from berrys_portal.json_input import json_value_storable_check, text_scrub
from berrys_portal.logging import log_context, log_context_update
from registry.client import service_client
from workflows import definitions
from workflows.definitions import Step, Workflow
from workflows.models import (
    STEP_CLAIMABLE,
    AttemptOutcome,
    RunEvent,
    RunStatus,
    StepAttempt,
    StepRun,
    StepStatus,
    WorkflowRun,
    step_idempotency_key,
)

logger = logging.getLogger(__name__)

SYSTEM = "system"
_HOSTNAME = socket.gethostname()


def worker_id() -> str:
    """``host:pid`` of this process. Not a module constant: the pool processes are forked
    after import, and a dead pool process must be told apart from its live parent."""
    return f"{_HOSTNAME}:{os.getpid()}"

# Errors that mean "the service is not there to call": never retried by the engine,
# they go straight to fallback / skip / fail.
UNAVAILABLE = (ServiceNotFoundError, NoEligibleServiceError, CircuitOpenError)



# --------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return timezone.now()


def _queue() -> str:
    return getattr(settings, "WORKFLOW_QUEUE", "celery")


def _enqueue(step_id: int, countdown: float | None = None) -> None:
    from workflows.tasks import run_step

    options: dict[str, Any] = {"queue": _queue()}
    if countdown and countdown > 0:
        options["countdown"] = countdown
    run_step.apply_async(args=[step_id], **options)


def _enqueue_on_commit(step_id: int, countdown: float | None = None) -> None:
    # robust: a broker outage must not turn a committed start or step into an error; the
    # step is queued in the database and the reconciler sends its message later.
    transaction.on_commit(lambda: _enqueue(step_id, countdown), robust=True)


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


def _truncate(body: Any) -> str:
    if body is None:
        return ""
    text = text_scrub(body) if isinstance(body, str) else json.dumps(body, default=str)
    limit = settings.WORKFLOW_RESPONSE_BODY_LIMIT
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


def _jsonable(value: Any) -> Any:
    """Request bodies are stored as JSON; anything odd is stored as its text."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


# --------------------------------------------------------------------------- start


def run_input_check(*, wf, input: Any) -> None:
    """Raise ``InvalidInput`` unless ``input`` is a JSON object with every key ``wf`` needs."""
    if not isinstance(input, dict):
        raise InvalidInput("input must be a JSON object", errors={"input": ["Must be a JSON object."]})
    missing = wf.missing_inputs(input)
    if missing:
        msg = f"Workflow {wf.name} needs input key(s): {', '.join(missing)}"
        raise InvalidInput(msg, errors={"input": [msg]})


# The run whose local step is executing, if any: a run that step starts gets the same owner key.
_parent_run: ContextVar[Any] = ContextVar("workflows_parent_run", default=None)


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
    if owner_id is None and (parent := _parent_run.get()) is not None:
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
    now = _now()
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
        _enqueue_on_commit(steps[0].pk)
    else:
        _activate(run, steps[0], wf.steps[0], now)
    return run


def _activate(run: WorkflowRun, step: StepRun, spec: Step, now: datetime, *, enqueue: bool = True) -> None:
    """Make ``step`` the current step: queue it (after commit) or, for a human step, wait.

    ``enqueue=False``: queue it without a message (the caller claims it in the same transaction).
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
        _enqueue_on_commit(step.pk)


# --------------------------------------------------------------------------- dead workers


def _process_dead_here(worker: str) -> bool:
    """True if ``worker`` ("host:pid") names a process on this host that no longer runs.

    Only a same-host question can be answered without waiting (a process on another host
    is known dead only when its lease expires). A zombie counts as dead; a pid reused by
    another process counts as alive, which only means waiting for the lease.
    """
    host, _, pid = worker.rpartition(":")
    if host != _HOSTNAME or not pid.isdigit():
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
    if row is None or not _process_dead_here(row[0]):
        return False
    return StepRun.objects.filter(pk=step_id, status=StepStatus.RUNNING, attempts_total=row[1]).update(
        lease_expires_at=_now() - timedelta(microseconds=1)) == 1


def _expire_dead_holders_here() -> int:
    """The reconciler's half of the same: every try in flight held by a dead process of this host."""
    in_flight = StepAttempt.objects.filter(
        outcome=AttemptOutcome.SENT, worker__startswith=_HOSTNAME + ":",
    ).values_list("step_id", "worker", "number")[:500]
    return sum(_expire_if_holder_died(step_id) for step_id, worker, _ in in_flight if _process_dead_here(worker))


# --------------------------------------------------------------------------- leases


class LeaseKeeper:
    """Renews the leases of the steps this process is running (the worker's heartbeat).

    Leases are short (``WORKFLOW_STEP_LEASE_SECONDS``) so a dead worker's step is re-sent
    within seconds; a live worker keeps its step by renewing every
    ``WORKFLOW_HEARTBEAT_SECONDS`` from one thread per process (its own DB connection),
    in one UPDATE for all the steps it holds. A step shorter than one period costs
    nothing but two dict operations. A renewal that matches no row means the lease was
    lost (another worker claimed the step); the late completion will then be refused by
    the fencing token, so nothing more is needed here.
    """

    def __init__(self) -> None:
        self._held: dict[int, int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._wake = threading.Event()

    def hold(self, step_id: int, token: int) -> None:
        with self._lock:
            self._held[step_id] = token
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                # After a fork the parent's thread is gone: start this process's own.
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="workflow-lease-keeper", daemon=True)
                self._thread.start()

    def release(self, step_id: int) -> None:
        with self._lock:
            self._held.pop(step_id, None)

    def held(self) -> dict[int, int]:
        with self._lock:
            return dict(self._held)

    def renew(self) -> int:
        """Push the held leases forward; returns how many were still ours."""
        held = self.held()
        if not held:
            return 0
        lease = _now() + timedelta(seconds=settings.WORKFLOW_STEP_LEASE_SECONDS)
        mine = Q()
        for step_id, token in held.items():
            mine |= Q(pk=step_id, attempts_total=token)
        return StepRun.objects.filter(mine, status=StepStatus.RUNNING).update(lease_expires_at=lease)

    def hand_back(self, *, why: str) -> int:
        """Give the steps this process holds back at once (the worker is stopping).

        Each goes back to ``queued`` with its message re-sent now, instead of waiting for
        its lease to expire; its open try is closed as worker_lost. If the call was in
        fact answered, the repeat carries the same idempotency key, and the completion
        of the try handed back is refused by the fencing token.
        """
        now = _now()
        handed = 0
        for step_id, token in self.held().items():
            with transaction.atomic():
                row = (StepRun.objects.select_for_update()
                       .filter(pk=step_id, attempts_total=token, status=StepStatus.RUNNING)
                       .values_list("run_id", "name").first())
                if row is None:
                    continue
                StepRun.objects.filter(pk=step_id).update(status=StepStatus.QUEUED, next_attempt_at=now,
                                                          lease_expires_at=None)
                StepAttempt.objects.filter(step_id=step_id, outcome=AttemptOutcome.SENT).update(
                    outcome=AttemptOutcome.WORKER_LOST, finished_at=now, error=WORKER_LOST.format(why=why))
                RunEvent.objects.create(run_id=row[0], kind=RunEvent.Kind.REQUEUED, actor=SYSTEM,
                                        step_name=row[1], details={"reason": why})
                _enqueue_on_commit(step_id)
            handed += 1
        with self._lock:
            self._held.clear()
        return handed

    def _loop(self) -> None:
        from django.db import close_old_connections

        while True:
            self._wake.wait(settings.WORKFLOW_HEARTBEAT_SECONDS)
            if not self.held():
                # Idle: keep no connection open (a test database can then be dropped, and a
                # pooler sees one client less); the next renewal opens one again.
                connection.close()
                continue
            try:
                self.renew()
            except Exception:  # noqa: BLE001 - the database may be down; the next beat tries again
                logger.warning("could not renew step leases", exc_info=True)
                close_old_connections()
                connection.close()


lease_keeper = LeaseKeeper()


def worker_process_stopping(*, timeout: float = 5.0) -> None:
    """Called when a pool process is stopping mid-step: hand its steps back, then let it die.

    The hand-back runs in a thread of its own (its own DB connection): the signal may have
    interrupted the main thread in the middle of a query on the main thread's connection.
    """
    if not lease_keeper.held():
        return

    def work() -> None:
        try:
            handed = lease_keeper.hand_back(why="worker stopping: step handed back")
            logger.warning("worker stopping: handed %d step(s) back", handed)
        except Exception:  # noqa: BLE001 - the lease expiry is the fallback
            logger.warning("could not hand steps back; their leases will expire", exc_info=True)
        finally:
            connection.close()

    thread = threading.Thread(target=work, name="workflow-hand-back")
    thread.start()
    thread.join(timeout)


# --------------------------------------------------------------------------- execute


@dataclass
class AttemptRecord:
    """What one attempt did; becomes a StepAttempt row."""

    started_at: datetime
    finished_at: datetime | None = None
    service_id: int | None = None
    service_name: str = ""
    method: str = ""
    url: str = ""
    request_body: Any = None
    status: int | None = None
    response: Any = None
    latency_ms: float | None = None
    error: str = ""
    outcome: str = ""
    # The "sent" StepAttempt row written by the claim, completed by the decision.
    attempt_id: int | None = None


# The hot path on PostgreSQL: one round trip claims the step, reads its run, closes the
# previous try if its worker was lost, and writes this try's attempt row as "sent" (so the
# try is on record before the request leaves). ``attempts_total`` is bumped by every claim:
# it numbers the attempt and is the fencing token a completion must still match.
_CLAIM_SQL = """
WITH c AS (
    UPDATE workflows_steprun AS s
       SET status = 'running', lease_expires_at = %(lease)s, deliveries = s.deliveries + 1,
           attempts_total = s.attempts_total + 1, started_at = COALESCE(s.started_at, %(now)s)
      FROM workflows_workflowrun AS r
     WHERE s.id = %(id)s AND r.id = s.run_id
       AND ((s.status IN ('queued', 'retrying') AND s.next_attempt_at <= %(due)s)
            OR (s.status = 'running' AND s.lease_expires_at < %(now)s))
    RETURNING s.id AS step_id, s."index", s.name, s.deliveries, s.attempt_count, s.attempts_total,
              s.generation, r.id AS run_id, r.workflow, r.version, r.status AS run_status,
              r.cancel_requested, r.context
), lost AS (
    UPDATE workflows_stepattempt AS a
       SET outcome = 'worker_lost', error = %(lost)s, finished_at = %(now)s
      FROM c
     WHERE a.step_id = c.step_id AND a.outcome = 'sent' AND a.number < c.attempts_total
    RETURNING a.id
), a AS (
    INSERT INTO workflows_stepattempt
           (step_id, number, service_name, request_method, request_url, response_body, error,
            outcome, worker, started_at)
    SELECT step_id, attempts_total, '', '', '', '', '', 'sent', %(worker)s::text, %(now)s::timestamptz
      FROM c
     WHERE run_status = 'running' AND NOT cancel_requested AND deliveries <= %(cap)s
    RETURNING id
)
SELECT "index", name, deliveries, attempt_count, attempts_total, generation, run_id, workflow, version,
       run_status, cancel_requested, context, (SELECT id FROM a), (SELECT count(*) FROM lost)
  FROM c
"""

WORKER_LOST = "Outcome unknown — worker lost ({why}); the call may or may not have reached the service"


def _hot_statement(sql: str, params: dict) -> tuple | None:
    """Run one of the two statements every step runs (PostgreSQL); returns its first row.

    As a server-side prepared statement: planning them cost ~0.6 ms per step, more than
    executing them. Django's cursors bind parameters client-side and never prepare, so
    this goes to the psycopg connection under Django's error wrapping. (Turn it off with
    WORKFLOW_PREPARED_STATEMENTS=false behind a pooler that cannot keep them, e.g. a
    PgBouncer older than 1.21 in transaction mode.)
    """
    if not settings.WORKFLOW_PREPARED_STATEMENTS:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()
    import psycopg

    connection.ensure_connection()  # Django's health check and reconnect, as cursor() does
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchone()


def _claim(step_id: int) -> StepRun | None:
    """Take the step for this worker; ``None`` if someone else has it or it is not due.

    The returned step carries ``attempt_id``: the "sent" row of this try (None when the
    run is no longer running or the delivery cap is reached: nothing will be sent).
    """
    if connection.vendor == "postgresql":
        return _claim_pg(step_id)
    return _claim_orm(step_id)


def _claim_pg(step_id: int) -> StepRun | None:
    now = _now()
    params = {"id": step_id, "now": now, "due": now + timedelta(seconds=1),
              "lease": now + timedelta(seconds=settings.WORKFLOW_STEP_LEASE_SECONDS),
              "worker": worker_id()[:200], "cap": settings.WORKFLOW_MAX_DELIVERIES,
              "lost": WORKER_LOST.format(why="its lease expired")}
    row = _hot_statement(_CLAIM_SQL, params)
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
    step.attempt_id = attempt_id
    return step


def _claim_orm(step_id: int) -> StepRun | None:
    now = _now()
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
        step.attempt_id = None
        run = step.run
        if (run.status == RunStatus.RUNNING and not run.cancel_requested
                and step.deliveries <= settings.WORKFLOW_MAX_DELIVERIES):
            step.attempt_id = StepAttempt.objects.create(
                step_id=step_id, number=step.attempts_total, outcome=AttemptOutcome.SENT,
                worker=worker_id()[:200], started_at=now,
            ).pk
    return step


def step_execute(*, step_id: int, inline_seconds: float = 0.0) -> str:
    """Run one attempt of a step (the body of the ``run_step`` task). Returns what happened.

    ``inline_seconds`` > 0: when the attempt completes the step, the same statement claims
    the run's next step for this worker, which runs it at once instead of sending it a
    message — for as long as this call has run less than ``inline_seconds`` (and the next
    step's timeout still fits under the task's soft time limit). Returns what the last
    attempt did.
    """
    # Log lines inside carry step_id, and run_id once the step is claimed (scoped to this call).
    with log_context(step_id=step_id):
        step = _claim(step_id)
        if step is None and _expire_if_holder_died(step_id):
            # Its worker died on this host (Celery re-delivers a killed child's message at
            # once): take the step over now rather than after its lease.
            step = _claim(step_id)
        if step is None:
            # The step is done, but its worker may have died running a later step of the run
            # inline (the message re-delivered is this step's): take that one over now.
            successor = _successor_held_by_dead_worker(step_id)
            step = _claim(successor) if successor is not None else None
        if step is None:
            return "not claimed"
        started = time.monotonic()
        budget = Budget(inline_until=started + inline_seconds,
                        hard_until=started + settings.WORKFLOW_STEP_SOFT_TIME_LIMIT - 5)
        while True:
            result, step = _run_claimed(step, budget)
            if step is None:
                return result


@dataclass(frozen=True)
class Budget:
    """How long one task may keep running claimed steps inline (``time.monotonic()`` values)."""

    inline_until: float
    hard_until: float

    def allows(self, spec: Step) -> bool:
        now = time.monotonic()
        return spec.kind != "human" and now < self.inline_until and now + (spec.timeout or 0) < self.hard_until


NO_INLINE = Budget(0.0, 0.0)


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


def _run_claimed(step: StepRun, budget: Budget) -> tuple[str, StepRun | None]:
    """Run one claimed step's attempt; returns what happened and the next step if claimed inline."""
    run = step.run
    log_context_update(run_id=run.pk, step_id=step.pk)
    # The fencing token: every claim bumps attempts_total, so a worker that lost its lease
    # (and someone else claimed the step since) can no longer complete it.
    token = step.attempts_total
    if run.status not in (RunStatus.RUNNING,) or run.cancel_requested:
        # Cancelled (or finished) while the message waited: release it without running.
        StepRun.objects.filter(pk=step.pk, attempts_total=token).update(
            status=StepStatus.SKIPPED, error="Run is no longer running", lease_expires_at=None,
            finished_at=_now(),
        )
        return "run not running", None
    if step.deliveries > settings.WORKFLOW_MAX_DELIVERIES:
        return _fail_delivery_cap(run, step), None
    try:
        wf = definitions.get(run.workflow, run.version)
    except definitions.UnknownWorkflow as exc:
        return _finish_failed_run(run, step, token, f"{exc} (the run is pinned to it)", None), None
    spec = wf.steps[step.index]
    ctx = run.context
    record = AttemptRecord(started_at=_now(), attempt_id=step.attempt_id)
    output: dict[str, Any] | None = None
    exc: BaseException | None = None
    lease_keeper.hold(step.pk, token)
    try:
        if spec.kind == "local":
            record.method = "LOCAL"
            started = time.perf_counter()
            parent = _parent_run.set(run.id)
            try:
                output = dict(spec.local(ctx) or {})
            finally:
                _parent_run.reset(parent)
                record.latency_ms = (time.perf_counter() - started) * 1000
        else:
            key = step_idempotency_key(run_id=run.pk, step_name=step.name, generation=step.generation)
            output = _call_http(spec, ctx, record, key)
    except Exception as error:  # noqa: BLE001 - every failure is an attempt outcome
        exc = error
        record.error = error_message(error)
    except SystemExit:
        # A pool process told to stop (billiard turns SIGTERM into SystemExit: a cold
        # shutdown, or SIGTERM to the whole process group as systemd and container
        # runtimes send): hand the step back now instead of leaving it to its lease.
        worker_process_stopping()
        raise
    finally:
        lease_keeper.release(step.pk)
    record.finished_at = _now()
    try:
        result, next_step = _decide(run, step, token, wf, spec, record, output, exc, budget)
    except (OperationalError, InterfaceError):
        # The database connection broke (backend terminated, failover) after the call was
        # made: record it on a new connection rather than leave the step to its lease.
        # Safe to repeat: the decision is fenced by the token (a committed first try
        # makes this one "lost lease"). Not inline: the first try may have claimed the next
        # step, and only a message finds out.
        logger.warning("recording step %s failed on a broken connection; retrying once", step.pk)
        connection.close()
        result, next_step = _decide(run, step, token, wf, spec, record, output, exc, NO_INLINE)
    if result == "lost lease":
        _record_late_refusal(run, step, token, record)
    metrics.observe_step(
        workflow=run.workflow, step=step.name, outcome=record.outcome or result,
        duration_seconds=(record.finished_at - record.started_at).total_seconds(),
    )
    return result, next_step


def _record_late_refusal(run: WorkflowRun, step: StepRun, token: int, record: AttemptRecord) -> None:
    """This worker lost the step's lease while it ran (partitioned, stalled): its result was
    refused by the fencing token. Say so on the run; the step itself is someone else's now."""
    logger.warning("late completion refused: step %s of run %s was taken over (fencing token %s)",
                   step.pk, run.pk, token)
    try:
        RunEvent.objects.create(run_id=run.pk, kind=RunEvent.Kind.LATE_REFUSED, actor=worker_id()[:200],
                                step_name=step.name,
                                details={"attempt": token, "outcome": record.outcome, "status": record.status})
    except Exception:  # noqa: BLE001 - only a note; the refusal itself already happened
        logger.warning("could not record the refused completion", exc_info=True)


def _call_http(spec: Step, ctx: dict, record: AttemptRecord, key: str) -> dict[str, Any]:
    try:
        path = spec.render_path(ctx)
        body = spec.request_body(ctx)
    except Exception as exc:
        raise WorkflowError(f"Could not build the request: {type(exc).__name__}: {exc}") from exc
    record.method, record.url, record.request_body = spec.method, path, _jsonable(body)
    kwargs: dict[str, Any] = {"timeout": spec.timeout}
    if spec.idempotency_header:
        # The same on every redelivery and retry of this effect: a service that honours it
        # answers a repeat with its first answer instead of acting twice.
        kwargs["headers"] = {spec.idempotency_header: key}
    kwargs["retries"] = 0  # the engine owns retries: one StepAttempt per try
    try:
        result = service_client.request(
            spec.method, service=spec.service_type, endpoint=path, data=body, **kwargs
        )
    except Exception as exc:
        call = getattr(exc, "call", None)
        if call is not None:
            _copy_call(record, call)
        if isinstance(exc, ServiceResponseError) and record.status is None:
            record.status, record.response = exc.status, exc.body
        raise
    _copy_call(record, result.call)
    record.status, record.response = result.status, result.body
    try:
        # PostgreSQL's jsonb refuses NUL and lone surrogates: an answer carrying them would crash
        # every delivery of this step when its output is stored. It is the service's error.
        json_value_storable_check(result.body)
    except InvalidInput as exc:
        where = "; ".join(f"{place}: {' '.join(msgs)}" for place, msgs in (exc.errors or {}).items())
        raise WorkflowError(f"The service's answer cannot be stored ({where})") from None
    try:
        return spec.output_from_response(ctx, result.body)
    except Exception as exc:
        raise WorkflowError(f"Could not read the response: {type(exc).__name__}: {exc}") from exc


def _copy_call(record: AttemptRecord, call: Any) -> None:
    record.service_id = getattr(call, "service_id", None)
    record.service_name = getattr(call, "service_name", "") or ""
    record.method = getattr(call, "method", record.method) or record.method
    record.url = getattr(call, "url", record.url) or record.url
    record.status = getattr(call, "status", None)
    record.response = getattr(call, "body", None)
    record.latency_ms = getattr(call, "latency_ms", None)


def _save_attempt(step: StepRun, record: AttemptRecord, number: int) -> None:
    """Complete the try's "sent" row (call inside the transaction that fenced the step)."""
    fields = dict(
        service_id=record.service_id, service_name=record.service_name[:200],
        request_method=record.method[:10], request_url=record.url[:2000], request_body=record.request_body,
        response_status=record.status, response_body=_truncate(record.response),
        latency_ms=record.latency_ms, error=record.error, outcome=record.outcome,
        worker=worker_id()[:200], started_at=record.started_at, finished_at=record.finished_at,
    )
    if record.attempt_id is not None:
        StepAttempt.objects.filter(pk=record.attempt_id).update(**fields)
    else:
        StepAttempt.objects.create(step_id=step.pk, number=number, **fields)


def _decide(run, step, token, wf, spec, record, output, exc, budget: Budget = NO_INLINE
            ) -> tuple[str, StepRun | None]:
    """Record the attempt and move the run on; returns what happened and the next step when
    it was claimed inline (the budget allowing)."""
    attempt_number = step.attempt_count + 1
    number = step.attempts_total
    if exc is None:
        record.outcome = "succeeded"
        return _complete(run, step, token, wf, record, number, StepStatus.SUCCEEDED, output, budget=budget)
    retryable = not isinstance(exc, (*UNAVAILABLE, WorkflowError)) and spec.retry.is_retryable(
        exc, record.status
    )
    if retryable and attempt_number < spec.retry.max_attempts:
        record.outcome = "retry"
        delay = spec.retry.delay_after(attempt_number)
        return _retry(step, token, record, number, delay), None
    # The step cannot complete: fallback, skip, or fail the run.
    cause = record.error
    if spec.fallback is not None:
        try:
            fallback_output = spec.fallback(run.context)
        except Exception as fb_exc:  # noqa: BLE001 - a broken fallback fails like the step
            fallback_output = None
            cause += f"; the fallback raised {type(fb_exc).__name__}: {fb_exc}"
        if fallback_output is not None:
            record.outcome = "fallback"
            return _complete(run, step, token, wf, record, number, StepStatus.FALLBACK,
                             dict(fallback_output), error=cause, budget=budget)
    if not spec.required:
        record.outcome = "skipped"
        return _complete(run, step, token, wf, record, number, StepStatus.SKIPPED, None, error=cause,
                         budget=budget)
    record.outcome = "failed"
    tries = f"after {attempt_number} attempt{'s' if attempt_number != 1 else ''}"
    return _finish_failed_run(run, step, token, f"{cause} (step {step.name}, {tries})", (record, number)), None


def _retry(step: StepRun, token: int, record: AttemptRecord, number: int, delay: float) -> str:
    now = _now()
    with transaction.atomic():
        updated = StepRun.objects.filter(pk=step.pk, status=StepStatus.RUNNING, attempts_total=token).update(
            status=StepStatus.RETRYING, next_attempt_at=now + timedelta(seconds=delay),
            attempt_count=F("attempt_count") + 1,
            deliveries=0, lease_expires_at=None, error=record.error,
        )
        if updated != 1:
            return "lost lease"
        _save_attempt(step, record, number)
        # Longer waits than the broker's visibility timeout would be redelivered early:
        # the reconciler picks those up when they are due.
        if delay < settings.CELERY_VISIBILITY_TIMEOUT:
            _enqueue_on_commit(step.pk, delay)
    return "retry"


# The hot path on PostgreSQL: one statement (one round trip, one commit) records the
# attempt, finishes the step, merges the context and queues the next step, each part
# conditional on the previous one (a lost lease or a cancelled run changes nothing).
_COMPLETE_SQL = """
WITH s AS (
    UPDATE workflows_steprun
       SET status = %(status)s, output = %(output)s, error = %(error)s, finished_at = %(now)s,
           lease_expires_at = NULL, attempt_count = attempt_count + 1, deliveries = 0
     WHERE id = %(step)s AND status = 'running' AND attempts_total = %(token)s
    RETURNING id
), a AS (
    UPDATE workflows_stepattempt
       SET service_id = %(service_id)s::bigint, service_name = %(service_name)s::text,
           request_method = %(method)s::text, request_url = %(url)s::text,
           request_body = %(request_body)s::jsonb, response_status = %(response_status)s::int,
           response_body = %(response_body)s::text, latency_ms = %(latency_ms)s::float8,
           error = %(attempt_error)s::text, outcome = %(outcome)s::text, worker = %(worker)s::text,
           started_at = %(started_at)s::timestamptz, finished_at = %(finished_at)s::timestamptz
     WHERE id = %(attempt)s::bigint AND EXISTS (SELECT 1 FROM s)
), r AS (
    UPDATE workflows_workflowrun
       SET context = %(context)s,
           status = CASE WHEN %(last)s THEN 'succeeded' ELSE status END,
           finished_at = CASE WHEN %(last)s THEN %(now)s ELSE finished_at END
     WHERE id = %(run)s AND status = 'running' AND NOT cancel_requested AND EXISTS (SELECT 1 FROM s)
    RETURNING id
), n AS (
    UPDATE workflows_steprun
       SET status = CASE WHEN %(inline)s THEN 'running' ELSE 'queued' END, next_attempt_at = %(now)s,
           lease_expires_at = CASE WHEN %(inline)s THEN %(lease)s::timestamptz END,
           deliveries = deliveries + CASE WHEN %(inline)s THEN 1 ELSE 0 END,
           attempts_total = attempts_total + CASE WHEN %(inline)s THEN 1 ELSE 0 END,
           started_at = CASE WHEN %(inline)s THEN COALESCE(started_at, %(now)s) ELSE started_at END,
           error = '', output = NULL, finished_at = NULL
     WHERE run_id = %(run)s AND "index" = %(next)s AND EXISTS (SELECT 1 FROM r)
    RETURNING id, name, deliveries, attempt_count, attempts_total, generation
), lost AS (
    UPDATE workflows_stepattempt AS a
       SET outcome = 'worker_lost', error = %(lost)s, finished_at = %(now)s
      FROM n
     WHERE %(inline)s AND a.step_id = n.id AND a.outcome = 'sent' AND a.number < n.attempts_total
    RETURNING a.id
), na AS (
    INSERT INTO workflows_stepattempt
           (step_id, number, service_name, request_method, request_url, response_body, error,
            outcome, worker, started_at)
    SELECT id, attempts_total, '', '', '', '', '', 'sent', %(worker)s::text, %(now)s::timestamptz
      FROM n
     WHERE %(inline)s AND deliveries <= %(cap)s
    RETURNING id
)
SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM r), n.id, n.name, n.deliveries, n.attempt_count,
       n.attempts_total, n.generation, (SELECT id FROM na), (SELECT count(*) FROM lost)
  FROM (SELECT 1) AS one LEFT JOIN n ON true
"""


def _complete(run, step, token, wf, record, number, status, output, error="", *, budget: Budget = NO_INLINE
              ) -> tuple[str, StepRun | None]:
    """The step is done (succeeded / fallback / skipped): merge its output and move on.

    With the budget allowing, the next step is claimed for this worker in the same
    statement (PostgreSQL) or transaction, its "sent" attempt row written with it, and
    returned; otherwise it is queued and sent a message after commit.
    """
    now = _now()
    context = dict(run.context)
    if output:
        context.update(output)
    next_index = step.index + 1
    last = next_index >= len(wf.steps)
    inline = not last and budget.allows(wf.steps[next_index])
    if (connection.vendor == "postgresql" and record.attempt_id is not None
            and (last or wf.steps[next_index].kind != "human")):
        return _complete_pg(run, step, token, record, number, status, output, error, context, now,
                            next_index, last, inline)
    with transaction.atomic():
        updated = StepRun.objects.filter(pk=step.pk, status=StepStatus.RUNNING, attempts_total=token).update(
            status=status, output=output, error=error, finished_at=now, lease_expires_at=None,
            attempt_count=F("attempt_count") + 1, deliveries=0,
        )
        if updated != 1:
            return "lost lease", None
        _save_attempt(step, record, number)
        if next_index >= len(wf.steps):
            if WorkflowRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
                status=RunStatus.SUCCEEDED, context=context, finished_at=now
            ):
                _count_finished_on_commit(run.workflow, RunStatus.SUCCEEDED)
            return str(status), None
        moved = WorkflowRun.objects.filter(
            pk=run.pk, status=RunStatus.RUNNING, cancel_requested=False
        ).update(context=context)
        if moved != 1:
            # Cancelled meanwhile: the running step finished, nothing further runs.
            return f"{status}; run cancelled", None
        next_step = StepRun.objects.only("pk").get(run_id=run.pk, index=next_index)
        run.context = context
        _activate(run, next_step, wf.steps[next_index], now, enqueue=not inline)
        if inline:
            claimed = _claim_orm(next_step.pk)  # a savepoint in this transaction
            if claimed is None:
                _enqueue_on_commit(next_step.pk)
            return str(status), claimed
    return str(status), None


def _complete_pg(run, step, token, record, number, status, output, error, context, now, next_index,
                 last, inline) -> tuple[str, StepRun | None]:
    from psycopg.types.json import Jsonb

    params = {
        "status": str(status), "output": Jsonb(output) if output is not None else None, "error": error,
        "now": now, "step": step.pk, "token": token, "attempt": record.attempt_id, "service_id": record.service_id,
        "service_name": record.service_name[:200], "method": record.method[:10], "url": record.url[:2000],
        "request_body": Jsonb(record.request_body) if record.request_body is not None else None,
        "response_status": record.status, "response_body": _truncate(record.response),
        "latency_ms": record.latency_ms, "attempt_error": record.error, "outcome": record.outcome,
        "worker": worker_id()[:200], "started_at": record.started_at, "finished_at": record.finished_at,
        "context": Jsonb(context), "last": last, "run": run.pk, "next": next_index, "inline": inline,
        "lease": now + timedelta(seconds=settings.WORKFLOW_STEP_LEASE_SECONDS),
        "cap": settings.WORKFLOW_MAX_DELIVERIES, "lost": WORKER_LOST.format(why="its lease expired"),
    }
    (step_done, run_moved, next_id, name, deliveries, attempt_count, attempts_total, generation, attempt_id,
     _lost) = _hot_statement(_COMPLETE_SQL, params)
    if not step_done:
        return "lost lease", None
    if last and run_moved:
        _count_finished_on_commit(run.workflow, RunStatus.SUCCEEDED)
    if next_id is None:
        if not last and not run_moved:
            return f"{status}; run cancelled", None
        return str(status), None
    if not inline:
        _enqueue_on_commit(next_id)  # autocommit: runs now, after the statement committed
        return str(status), None
    run.context = context
    claimed = StepRun(id=next_id, run=run, index=next_index, name=name, deliveries=deliveries,
                      attempt_count=attempt_count, attempts_total=attempts_total, generation=generation,
                      status=StepStatus.RUNNING)
    claimed.attempt_id = attempt_id
    return str(status), claimed


def _finish_failed_run(run, step, token, message: str, attempt: tuple | None) -> str:
    now = _now()
    with transaction.atomic():
        updated = StepRun.objects.filter(pk=step.pk, status=StepStatus.RUNNING, attempts_total=token).update(
            status=StepStatus.FAILED, error=message, finished_at=now, lease_expires_at=None,
            attempt_count=F("attempt_count") + (1 if attempt else 0),
        )
        if updated != 1:
            return "lost lease"
        if attempt:
            _save_attempt(step, *attempt)
        if WorkflowRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=RunStatus.FAILED, error=message, failed_step=step.name, finished_at=now
        ):
            _count_finished_on_commit(run.workflow, RunStatus.FAILED)
    logger.warning("workflow run %s failed: %s", run.pk, message)
    return "failed"


def _count_finished_on_commit(workflow: str, status: str) -> None:
    transaction.on_commit(lambda: metrics.record_run_finished(workflow=workflow, status=status))


def _fail_delivery_cap(run: WorkflowRun, step: StepRun) -> str:
    cap = settings.WORKFLOW_MAX_DELIVERIES
    message = (
        f"Delivery cap reached: step {step.name} was delivered {step.deliveries} times without "
        f"finishing an attempt (its worker died each time); WORKFLOW_MAX_DELIVERIES={cap}"
    )
    with transaction.atomic():
        RunEvent.objects.create(run_id=run.pk, kind=RunEvent.Kind.DELIVERY_CAP, actor=SYSTEM,
                                step_name=step.name, details={"deliveries": step.deliveries})
        return _finish_failed_run(run, step, step.attempts_total, message, None)


# --------------------------------------------------------------------------- reconcile


def steps_reconcile(*, batch: int = 500) -> dict[str, int]:
    """Re-enqueue steps whose message is gone; time out waiting human steps.

    Each step is touched at most once per pass (its due time / lease is pushed forward
    before its message is sent). Returns counts of what was done.
    """
    # Tries held by dead processes of this host: their leases end now, not in a lease's time.
    _expire_dead_holders_here()
    now = _now()
    grace = timedelta(seconds=settings.WORKFLOW_RECONCILE_GRACE_SECONDS)
    counts = {"requeued": 0, "lease_expired": 0, "timed_out": 0}
    waiting_messages = _declare_queue()
    if waiting_messages == 0:
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
        with transaction.atomic():
            # Pushing the due time forward keeps the next pass from sending it again.
            if StepRun.objects.filter(pk=pk, status=status, next_attempt_at__lt=now - grace).update(
                next_attempt_at=now
            ) != 1:
                continue
            RunEvent.objects.create(run_id=run_id, kind=RunEvent.Kind.REQUEUED, actor=SYSTEM,
                                    step_name=name, details={"reason": f"{status} past due"})
            _enqueue_on_commit(pk)
        counts["requeued"] += 1
    for pk, run_id, name, lease in expired:
        with transaction.atomic():
            if StepRun.objects.filter(pk=pk, status=StepStatus.RUNNING, lease_expires_at=lease).update(
                status=StepStatus.QUEUED, next_attempt_at=now, lease_expires_at=None
            ) != 1:
                continue
            lost = StepAttempt.objects.filter(step_id=pk, outcome=AttemptOutcome.SENT).update(
                outcome=AttemptOutcome.WORKER_LOST, finished_at=now,
                error=WORKER_LOST.format(why="no heartbeat: its lease expired"),
            )
            RunEvent.objects.create(run_id=run_id, kind=RunEvent.Kind.REQUEUED, actor=SYSTEM,
                                    step_name=name, details={"reason": "lease expired", "worker_lost": lost})
            _enqueue_on_commit(pk)
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

    try:
        queue = app.amqp.queues[_queue()]
        with app.connection_for_write() as conn:
            bound = queue.bind(conn.default_channel)
            bound.declare()
            # Not passive: Redis has no key for an empty queue, so a passive declare fails.
            declared = bound.queue_declare()
            return getattr(declared, "message_count", None)
    except Exception:  # noqa: BLE001 - the broker may be down; the next pass tries again
        logger.warning("could not declare the workflow queue %s", _queue(), exc_info=True)
        return None


def wait_timeout(*, step_id: int) -> bool:
    """Apply a waiting human step's ``on_timeout`` outcome."""
    now = _now()
    with transaction.atomic():
        step = (StepRun.objects.select_for_update().select_related("run")
                .filter(pk=step_id, status=StepStatus.WAITING, wait_until__lt=now).first())
        if step is None:
            return False
        run = step.run
        wf = definitions.get(run.workflow, run.version)
        spec = wf.steps[step.index]
        outcome = spec.human.on_timeout
        RunEvent.objects.create(run=run, kind=RunEvent.Kind.TIMED_OUT, actor=SYSTEM,
                                step_name=step.name, details={"outcome": outcome})
        if outcome == "fail":
            message = f"Timed out waiting for an answer (step {step.name})"
            step.status, step.error, step.finished_at = StepStatus.FAILED, message, now
            step.save(update_fields=["status", "error", "finished_at"])
            WorkflowRun.objects.filter(pk=run.pk).update(
                status=RunStatus.FAILED, error=message, failed_step=step.name, finished_at=now
            )
            return True
        if outcome == "skip":
            advance_after(run=run, step=step, wf=wf, status=StepStatus.SKIPPED, output=None,
                          error="Timed out waiting for an answer")
        else:
            output = spec.output_from_answer(run.context, dict(spec.human.default_answer))
            advance_after(run=run, step=step, wf=wf, status=StepStatus.SUCCEEDED, output=output,
                          error="Timed out: continued with the default answer")
    return True


def advance_after(*, run: WorkflowRun, step: StepRun, wf: Workflow, status: str,
                  output: dict | None, error: str = "") -> None:
    """Finish a non-running step (a human answer or timeout) and activate the next one.

    Call inside a transaction holding the step's row lock.
    """
    now = _now()
    context = dict(run.context)
    if output:
        context.update(output)
    StepRun.objects.filter(pk=step.pk).update(status=status, output=output, error=error,
                                              finished_at=now, wait_until=None)
    next_index = step.index + 1
    if next_index >= len(wf.steps):
        WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, context=context,
                                                     finished_at=now)
        _count_finished_on_commit(run.workflow, RunStatus.SUCCEEDED)
        return
    WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, context=context)
    run.context = context
    next_step = StepRun.objects.get(run_id=run.pk, index=next_index)
    _activate(run, next_step, wf.steps[next_index], now)
