"""The health sweep loop: claim due services, send their probes, hand results to the writer.

``health_sweep_run`` is the loop (``registry.health`` wraps it in the global lock):

1. claims due services in small batches with ``SELECT … FOR UPDATE SKIP LOCKED`` and
   pushes their ``next_check_at`` forward in the same transaction, so helper workers
   (``health_sweep_share``) running the same loop never probe a service twice;
2. asks each service's breaker whether the probe may go (``health_effects.plan_probes``);
3. sends the probes to the prober's event loop (``registry.prober``), keeping up to
   ``HEALTH_SWEEP_MAX_QUEUED`` probes out and claiming more as results come back, so
   hanging services never hold back the others;
4. hands finished probes, in groups, to one writer thread (its own connection) that
   evaluates and writes them (``health_results.outcomes_write``), also between two claims:
   in scenario B of ``bench/health.py`` (10,000 services, claims of 500) the claims take
   ~2–2.5 s, and the first write used to wait for the last of them (it began 2.6–2.9 s into
   the sweep, with 3,000–4,500 results in one group); now it begins 0.3–1.2 s in, beside the
   claims.

No network I/O happens inside a transaction.

The writer stays a thread. A writer process (forked per sweep, outcomes pickled to it) was
measured in scenario B and rejected: sweep 7.71 s against 6.91 s with the thread, steady
state 6.77 s against 6.00 s (medians of 3, interleaved, load average 5 on 2 cores,
2026-12-01): the machine is short of CPU, not of GIL, and pickling the groups cost the
sweep's process about what the writer's judging had (docs/benchmarks.md, *Issue 14, third
pass*).

The claim is one PostgreSQL ``UPDATE … WHERE id IN (SELECT … FOR NO KEY UPDATE SKIP LOCKED
LIMIT n) RETURNING *`` (``_claim_postgres``); SQLite takes the ORM's three statements
(``_claim_orm``). The statement earns its place: claiming 10,000 services in batches of
500 took 2.49 s against the ORM's 3.78 s (1.52×; ``bench/health.py --only W``, medians of
3, load average 10.5 on 2 shared cores, 2026-12-01). Both read their batch off the
``registry_service_due`` index, which is in the claim's order (migration 0013): before,
every claim scanned and sorted all due rows.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from registry import prober
from registry.health_effects import Plan, plan_probes
from registry.health_results import Outcome, SweepReport, outcome_of, outcomes_write
from registry.health_rules import timeout_of
from registry.models import HealthStatus, Service

logger = logging.getLogger(__name__)

PROBER_STALL_MARGIN_SECONDS = 30.0


def probe_submit(plans: list[Plan], results: queue.SimpleQueue, gate: prober.Gate) -> None:
    def done(plan: Plan, response, error, seconds: float) -> None:
        try:
            results.put(outcome_of(plan, response, error, seconds))
        except BaseException as exc:  # noqa: BLE001 - the sweep waits for exactly one result per probe
            results.put(Outcome(plan=plan, checked_at=timezone.now(), error=f"probe error: {exc!r}"))

    prober.prober().submit(
        plans, url_of=lambda plan: plan.service.health_url,
        timeout_of=lambda plan: timeout_of(plan.service), done=done, gate=gate,
        max_body=settings.HEALTH_PROBE_MAX_BODY_BYTES,
    )


# --- Claiming -----------------------------------------------------------------------------


def probed() -> Q:
    return Q(ttl_seconds__isnull=True) & ~Q(health_url="") & ~Q(status=HealthStatus.MAINTENANCE)


def _claim(*, now: datetime, batch_size: int, service_ids: list[int] | None, lease: timedelta) -> list[Service]:
    """Lock a batch of due services (skipping rows other sweepers hold) and push them forward."""
    qs = Service.objects.filter(probed())
    if service_ids is None:
        qs = qs.filter(Q(next_check_at__isnull=True) | Q(next_check_at__lte=now)).order_by(
            F("next_check_at").asc(nulls_first=True), "id"
        )
    else:
        qs = qs.filter(id__in=service_ids).order_by("id")
    if connection.vendor == "postgresql":
        return _claim_postgres(qs, batch_size=batch_size, until=now + lease)
    return _claim_orm(qs, batch_size=batch_size, until=now + lease)


def _claim_orm(qs, *, batch_size: int, until: datetime) -> list[Service]:
    """Lock a batch, push it forward, fetch it: three statements in one transaction."""
    with transaction.atomic():
        ids = list(qs.select_for_update(skip_locked=True, no_key=True).values_list("id", flat=True)[:batch_size])
        if ids:
            Service.objects.filter(id__in=ids).update(next_check_at=until)
    return list(Service.objects.filter(id__in=ids)) if ids else []


def _claim_postgres(qs, *, batch_size: int, until: datetime) -> list[Service]:
    """Lock, push forward and fetch a batch in ONE statement (one round trip).

    FOR NO KEY UPDATE: rows inserted elsewhere that point at a service
    (snapshots, breaker events, alerts) take KEY SHARE locks on it; those must
    not make the sweep skip the service.
    """
    with transaction.atomic():  # Django compiles FOR UPDATE only inside a transaction
        inner, params = (
            qs.select_for_update(skip_locked=True, no_key=True).values("id")[:batch_size]
            .query.sql_with_params()
        )
        table = Service._meta.db_table
        sql = f"UPDATE {table} SET next_check_at = %s WHERE id IN ({inner}) RETURNING *"
        return list(Service.objects.raw(sql, [until, *params]))


# --- The loop -----------------------------------------------------------------------------


def health_sweep_run(
    *,
    service_ids: list[int] | None = None,
    force: bool = False,
    batch_size: int | None = None,
    max_in_flight: int | None = None,
    max_queued: int | None = None,
    concurrency: int | None = None,
    keep_rows: bool = False,
    detach_after: float | None = None,
) -> SweepReport:
    """Claim, probe and record due services until none is left (no global lock; see health_sweep).

    The calling thread claims and dispatches; results are evaluated and written by
    one writer thread (its own database connection) as they arrive, so claiming new
    work never waits for the database writes of earlier results. Call it outside a
    transaction.

    ``detach_after``: once everything due is dispatched, wait at most this many
    seconds for the remaining results, then leave them to a background thread of
    this process (which writes them as they arrive) and return — the beat sweep
    uses it so that slow or black-holed destinations never hold the sweep lock.
    The report then counts only the results seen before returning.
    """
    started = time.perf_counter()
    batch_size = batch_size or settings.HEALTH_SWEEP_BATCH_SIZE
    gate = prober.Gate(
        max_in_flight=max(max_in_flight or settings.HEALTH_SWEEP_MAX_IN_FLIGHT, 1),
        concurrency=max(concurrency or settings.HEALTH_SWEEP_CONCURRENCY, 1),
        slow_after=settings.HEALTH_SWEEP_SLOW_AFTER_SECONDS,
    )
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweep-writer")
    writes: list[Future] = []
    report = SweepReport()
    # Finished probes arrive on a queue from the prober's loop thread.
    results: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
    # The claim lease outlives any probe and the per-destination queue, so nobody
    # re-claims a service while it waits or is probed.
    lease = timedelta(seconds=300)
    max_queued = max_queued or settings.HEALTH_SWEEP_MAX_QUEUED
    write_batch = 1000
    pending_ids = list(service_ids) if service_ids is not None else None
    state = {"outstanding": 0, "longest": 0.0, "last_result": time.monotonic(),
             "last_flush": time.monotonic(), "ready": []}

    def flush() -> None:
        if state["ready"]:
            writes.append(writer.submit(outcomes_write, state["ready"], report, keep_rows=keep_rows))
        state["ready"], state["last_flush"] = [], time.monotonic()

    def collect_once(*, wait: bool = True) -> None:
        """Take what came back (waiting up to 0.2 s, or not at all between claims); hand a
        batch to the writer when due."""
        try:
            got = [results.get(timeout=0.2) if wait else results.get_nowait()]
        except queue.Empty:
            got = []
        while True:
            try:
                got.append(results.get_nowait())
            except queue.Empty:
                break
        state["outstanding"] -= len(got)
        now = time.monotonic()
        if got:
            state["last_result"] = now
        elif wait and now - state["last_result"] > state["longest"] + PROBER_STALL_MARGIN_SECONDS:
            flush()  # what did come back is kept
            raise RuntimeError(
                f"health sweep: no probe result for {now - state['last_result']:.0f} s with "
                f"{state['outstanding']} probe(s) out (longest timeout {state['longest']:g} s): "
                "the prober stalled"
            )
        state["ready"].extend(got)
        if len(state["ready"]) >= write_batch or now - state["last_flush"] > 1.0:
            flush()

    def finish() -> None:
        flush()
        try:
            for fut in writes:
                fut.result()  # re-raise a failed write here
        finally:
            writer.submit(connections.close_all).result()  # the writer's own connection
            writer.shutdown(wait=True)

    def drain_in_background() -> None:
        try:
            while state["outstanding"] > 0:
                collect_once()
            finish()
        except Exception:  # noqa: BLE001 - a background thread: log, the leases expire
            logger.exception("health: writing the detached results of a sweep failed")

    exhausted = False
    detached = False
    dispatched_at: float | None = None
    try:
        while True:
            # Claim while the prober has room: each batch is sent as soon as it is
            # claimed, so probing starts after the first claim, not the last.
            while not exhausted and state["outstanding"] < max_queued:
                if pending_ids is not None:
                    chunk, pending_ids = pending_ids[:batch_size], pending_ids[batch_size:]
                    batch = _claim(now=timezone.now(), batch_size=batch_size, service_ids=chunk, lease=lease)
                    exhausted = not pending_ids
                else:
                    batch = _claim(now=timezone.now(), batch_size=batch_size, service_ids=None, lease=lease)
                    exhausted = len(batch) < batch_size
                report.claimed += len(batch)
                send = []
                for plan in plan_probes(batch, force=force):
                    if plan.withheld:
                        state["ready"].append(Outcome(plan=plan, checked_at=timezone.now()))
                    else:
                        send.append(plan)
                if send:
                    state["longest"] = max(state["longest"], *(timeout_of(p.service) for p in send))
                    probe_submit(send, results, gate)
                    state["outstanding"] += len(send)
                # What came back meanwhile goes to the writer now, so the writes overlap the
                # claims instead of starting after the last one (see the module docstring).
                collect_once(wait=False)
            if not state["outstanding"]:
                if exhausted:
                    break
                continue
            if exhausted and detach_after is not None:
                dispatched_at = dispatched_at or time.monotonic()
                if time.monotonic() - dispatched_at > detach_after:
                    flush()
                    logger.info("health: %d slow probe(s) left to a background writer",
                                state["outstanding"])
                    threading.Thread(target=drain_in_background, name="sweep-drain", daemon=True).start()
                    detached = True
                    break
            collect_once()
    finally:
        if not detached:
            finish()
    report.seconds = time.perf_counter() - started
    return report
