"""Benchmark: time-to-settle after a fault (not a test; prints a table).

Run from the repository root (``-m`` matters)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_settle REDIS_URL=redis://127.0.0.1:6379/3 \\
        .venv/bin/python -m bench.settle [--runs 10] [--repeats 3] [--faults child,worker,broker,db]

    # the same on RabbitMQ (a vhost of your own):
    CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/settle ... .venv/bin/python -m bench.settle

Production form on one host: one Celery worker (prefork, concurrency 2) on a private queue
with the production lease and heartbeat defaults, the five simulated Berrys services
in this process (Idempotency-Key honoured, ``--latency-ms`` per call so calls are in
flight when the fault hits), and the reconciler run by this process every
``WORKFLOW_RECONCILE_EVERY_SECONDS`` as beat would. Each repeat starts ``--runs``
``project_creation`` runs (each starts a 7-step ``project_planning`` run), waits
``--fault-after`` seconds, injects one fault, and measures the time from the fault until
every run (children included) has finished. Fault kinds:

* ``child``  — SIGKILL the worker's pool processes (Celery starts new ones);
* ``worker`` — SIGKILL the whole worker, started again 1 s later (a supervisor's restart);
* ``broker`` — empty the broker (Redis FLUSHDB of the broker db / RabbitMQ purge of the queue);
* ``db``     — terminate every PostgreSQL backend of this database;
* ``none``   — no fault: the time the same work needs anyway (the baseline).

Also reported: runs not succeeded, duplicate effects at the services that honour the key
(must be 0), repeats the services answered from their key store, and attempts closed as
"outcome unknown — worker lost".
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUEUE = os.environ.get("BENCH_QUEUE") or f"settle-{uuid.uuid4().hex[:6]}"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_settle")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/3")
os.environ.setdefault("WORKFLOW_QUEUE", QUEUE)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

FAULTS = ("none", "child", "worker", "broker", "db")


def _ensure_database() -> None:
    from bench.workflows import _ensure_database as ensure

    ensure()


def _start_worker() -> subprocess.Popen:
    env = dict(os.environ, WORKFLOW_QUEUE=QUEUE, PYTHONPATH=str(ROOT), LOG_LEVEL="WARNING")
    (ROOT / "var").mkdir(exist_ok=True)
    log = open(ROOT / "var" / "bench-settle-worker.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "berrys_portal", "worker", "-P", "prefork", "-c", "2",
         "--without-heartbeat", "--without-gossip", "--without-mingle", "-Q", QUEUE,
         "-n", f"{QUEUE}-{uuid.uuid4().hex[:4]}@%h", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    return proc


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


class Stack:
    """The simulators, the worker and the reconciler loop."""

    def __init__(self, latency_ms: float):
        from registry.models import HealthStatus, Service
        from simulators.runner import SimulatorStack

        self.sims = SimulatorStack(portal_url=None, api_key=None)
        self.sims.start()
        Service.objects.filter(name__startswith="settle-").delete()
        for svc in self.sims.services:
            svc.set_faults({"latency_ms": latency_ms})
            Service.objects.create(name=f"settle-{svc.slug}", type=svc.service_type, url=svc.url,
                                   health_url=svc.url + "/health", status=HealthStatus.PASSING)
        self.worker = _start_worker()
        self._stop = threading.Event()
        self._reconciler = threading.Thread(target=self._reconcile_loop, daemon=True)
        self._reconciler.start()

    def _reconcile_loop(self) -> None:
        from django.db import close_old_connections

        from workflows.engine import steps_reconcile

        while not self._stop.wait(settings.WORKFLOW_RECONCILE_EVERY_SECONDS):
            try:
                close_old_connections()
                steps_reconcile()
            except Exception as exc:  # noqa: BLE001 - as beat: the next pass tries again
                print(f"  (reconcile pass failed: {type(exc).__name__})", file=sys.stderr)
                from django.db import connection

                connection.close()

    def fault(self, kind: str) -> None:
        if kind == "child":
            for pid in _children(self.worker.pid):
                os.kill(pid, signal.SIGKILL)
        elif kind == "worker":
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait(10)
            time.sleep(1.0)
            self.worker = _start_worker()
        elif kind == "broker":
            _broker_flush()
        elif kind == "db":
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            connection.close()

    def close(self) -> None:
        self._stop.set()
        if self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
        self.sims.stop()


def _broker_flush() -> None:
    url = settings.CELERY_BROKER_URL
    if url.startswith("redis"):
        import redis

        redis.Redis.from_url(url).flushdb()
    else:
        from berrys_portal.celery import app

        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(QUEUE)


def _wait_settled(ids, timeout: float) -> float | None:
    from django.db import close_old_connections

    from workflows.models import RUN_FINISHED, WorkflowRun

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            close_old_connections()
            parents = list(WorkflowRun.objects.filter(pk__in=ids).values_list("status", "context"))
            child_ids = [c.get("planning", {}).get("run_id") for _, c in parents]
            child_ids = [c for c in child_ids if c]
            pending = sum(s not in RUN_FINISHED for s, _ in parents)
            pending += WorkflowRun.objects.filter(pk__in=child_ids).exclude(status__in=RUN_FINISHED).count()
            if pending == 0 and len(child_ids) == len(ids):
                return time.monotonic()
        except Exception:  # noqa: BLE001 - the db fault: ask again
            from django.db import connection

            connection.close()
        time.sleep(0.1)
    return None


def one_repeat(stack: Stack, kind: str, runs: int, fault_after: float, timeout: float) -> dict:
    from django.db.models import Q

    from workflows.engine import run_start
    from workflows.models import AttemptOutcome, StepAttempt, WorkflowRun

    tag = uuid.uuid4().hex[:6]
    ids = [run_start(workflow="project_creation", input={"name": f"settle-{tag}-{i}"},
                     triggered_by="bench")[0].pk for i in range(runs)]
    time.sleep(fault_after)
    fault_at = time.monotonic()
    stack.fault(kind)
    done = _wait_settled(ids, timeout)
    parents = WorkflowRun.objects.filter(pk__in=ids)
    child_ids = [c.get("planning", {}).get("run_id") for c in parents.values_list("context", flat=True)]
    every = WorkflowRun.objects.filter(Q(pk__in=ids) | Q(pk__in=[c for c in child_ids if c]))
    lost = StepAttempt.objects.filter(step__run__in=every, outcome=AttemptOutcome.WORKER_LOST).count()
    return {
        "settle": (done - fault_at) if done else float("inf"),
        "not_succeeded": every.exclude(status="succeeded").count(),
        "lost_tries": lost,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="project_creation runs per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--latency-ms", type=float, default=250.0, help="added to every simulated call")
    parser.add_argument("--fault-after", type=float, default=2.0, help="seconds after the starts")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    kinds = [k for k in args.faults.split(",") if k]
    for k in kinds:
        if k not in FAULTS:
            raise SystemExit(f"unknown fault {k!r}; choose from {', '.join(FAULTS)}")

    _ensure_database()
    stack = Stack(args.latency_ms)
    results: dict[str, list[dict]] = {}
    try:
        time.sleep(3)  # the worker's start-up
        for kind in kinds:
            for _ in range(args.repeats):
                results.setdefault(kind, []).append(
                    one_repeat(stack, kind, args.runs, args.fault_after, args.timeout))
                print(f"  {kind}: {results[kind][-1]}", file=sys.stderr)
        honoured = [s for s in stack.sims.services if s.honours_idempotency_key]
        duplicates = sum(s.duplicate_effects() for s in honoured)
        replays = sum(s.counters.get("idempotent replays", 0) for s in stack.sims.services)
        unhonoured = sum(s.duplicate_effects() for s in stack.sims.services if not s.honours_idempotency_key)
        pc = stack.sims.find("PROJECT_COORDINATOR")
        projects = len(pc.store["projects"])
    finally:
        stack.close()

    broker = settings.CELERY_BROKER_URL.split("://", 1)[0]
    print(f"\nTime to settle after a fault — {args.runs} project_creation runs (+{args.runs} project_planning), "
          f"1 worker (prefork -c 2), broker {broker}, median of {args.repeats}")
    print(f"lease {settings.WORKFLOW_STEP_LEASE_SECONDS} s, heartbeat {settings.WORKFLOW_HEARTBEAT_SECONDS:.1f} s, "
          f"reconcile every {settings.WORKFLOW_RECONCILE_EVERY_SECONDS} s, "
          f"simulated call latency {args.latency_ms:.0f} ms, fault {args.fault_after:.0f} s after the starts\n")
    print("| fault  | settle s (median) | each repeat, s        | runs not succeeded | tries lost | target   |")
    print("|--------|-------------------|-----------------------|--------------------|------------|----------|")
    for kind in kinds:
        rows = results[kind]
        settles = [r["settle"] for r in rows]
        each = ", ".join(f"{s:.1f}" for s in settles)
        print(f"| {kind:<6} | {statistics.median(settles):17.1f} | {each:<21} | "
              f"{sum(r['not_succeeded'] for r in rows):18d} | {sum(r['lost_tries'] for r in rows):10d} | "
              f"{'<= 45 s' if kind != 'none' else '':<8} |")
    total_runs = args.runs * args.repeats * len(kinds)
    print(f"\nProject Coordinator: {projects} projects for {total_runs} project_creation runs; "
          f"duplicate effects where the key is honoured: {duplicates}; repeats answered from the key "
          f"store: {replays}; duplicate effects at Model Orchestration (does not dedupe): {unhonoured}")


if __name__ == "__main__":
    main()
