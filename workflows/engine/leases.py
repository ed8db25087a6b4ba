"""Leases: a worker keeps the steps it runs (heartbeat) and hands them back when it stops.

One ``workflow-lease-keeper`` thread per worker process (docs/architecture.md, threads):
it renews, in one UPDATE, the leases of the steps this process holds for longer than
``WORKFLOW_HEARTBEAT_SECONDS``; a step shorter than that costs two dict operations.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from workflows.engine.transitions import step_requeue_lost
from workflows.models import StepRun, StepStatus

logger = logging.getLogger("workflows.engine")  # one name for the engine's log lines, whatever module


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
        lease = timezone.now() + timedelta(seconds=settings.WORKFLOW_STEP_LEASE_SECONDS)
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
        handed = 0
        for step_id, token in self.held().items():
            row = StepRun.objects.filter(pk=step_id).values_list("run_id", "name").first()
            if row is not None and step_requeue_lost(step_id=step_id, run_id=row[0], step_name=row[1], why=why,
                                                     reason=why, fence={"attempts_total": token}):
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
