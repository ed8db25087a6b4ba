"""Benchmark: the workflow engine against a bare Celery chain and DBOS Transact (prints a table).

Run from the repository root (``-m`` matters: the module name would shadow the app)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_wf_bench REDIS_URL=redis://127.0.0.1:6379/3 \\
        .venv/bin/python -m bench.workflows [--runs 100] [--repeats 7] [--serial 20] [--no-dbos]

One Celery worker (prefork, concurrency 2) on a private queue; a fast HTTP stub on
loopback. A 7-step workflow (7 POSTs) is compared with the same 7 POSTs made by a
bare Celery chain that persists nothing, and by DBOS Transact (durable workflows
checkpointed in the same PostgreSQL database; two worker processes running one
workflow each: ``bench/workflows_dbos.py``; installed by ``pip install -e '.[bench]'``,
skipped with a note when it is not installed):

* throughput: ``--runs`` runs started at once, runs completed per second (median of ``--repeats``);
* orchestration overhead per step, measured on ``--serial`` runs made one at a time:
  step wall time (from the previous step's end to this step's end) minus the HTTP
  call's own time; the chain's figure is (chain wall time - HTTP time) / 7.

(Over ~400 lines: one benchmark, with its servers, scenarios and table in one file, so it
runs as one command; it is not portal code.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 7
QUEUE = os.environ.get("BENCH_QUEUE") or f"wf-bench-{uuid.uuid4().hex[:6]}"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
# As in production: DEBUG wraps every query in a recording cursor (the worker inherits this).
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_wf_bench")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/3")
os.environ.setdefault("WORKFLOW_QUEUE", QUEUE)

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from celery import chain, shared_task  # noqa: E402

from workflows.definitions import NO_RETRY, Step, Workflow, register  # noqa: E402

BENCH_WORKFLOW = Workflow(
    name="bench_seven",
    version=1,
    description="Seven POSTs to the bench stub.",
    steps=[
        Step(name=f"call_{i}", service_type="BENCH_STUB", path=f"/step/{i}",
             build_request=lambda ctx, i=i: {"i": i}, read_response=lambda ctx, body, i=i: {f"r{i}": body["ok"]},
             retry=NO_RETRY, timeout=5.0)
        for i in range(STEPS)
    ],
)
register(BENCH_WORKFLOW, replace=True)

_session = threading.local()


@shared_task(name="bench.http_call", ignore_result=True)
def bench_http_call(acc_ms: float, url: str, i: int) -> float:
    """One link of the bare chain: one POST, no persistence; passes the HTTP time on."""
    session = getattr(_session, "s", None) or requests.Session()
    _session.s = session
    started = time.perf_counter()
    session.post(f"{url}/step/{i}", json={"i": i}, timeout=5).raise_for_status()
    return acc_ms + (time.perf_counter() - started) * 1000


@shared_task(name="bench.chain_done", ignore_result=True)
def bench_chain_done(acc_ms: float, key: str) -> None:
    from django.core.cache import cache

    cache.set(f"bench:{key}", (time.time(), acc_ms), timeout=600)


class Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY every keep-alive
    # response waits ~40 ms on Nagle + delayed ACK, and the stub, not the code, is measured.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _ensure_database() -> None:
    import psycopg
    from django.conf import settings
    from django.core.management import call_command

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql"):
        with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], password=db.get("PASSWORD"),
                             dbname="postgres", autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
                conn.execute(f'CREATE DATABASE "{db["NAME"]}"')
    call_command("migrate", verbosity=0)


def _vacuum() -> None:
    """Start from compact tables: earlier runs' deleted rows would otherwise be scanned.

    (PostgreSQL's autovacuum does this in production; it is off on some machines, this
    one included.)
    """
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE) workflows_workflowrun, workflows_steprun, workflows_stepattempt, "
                           "workflows_runevent, registry_service")


def _start_worker() -> subprocess.Popen:
    env = dict(os.environ, WORKFLOW_QUEUE=QUEUE, PYTHONPATH=str(ROOT), LOG_LEVEL="WARNING")
    log = open(ROOT / "var" / "bench-worker.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "berrys_portal", "worker", "-P", "prefork", "-c", "2",
         "--without-heartbeat", "--without-gossip", "--without-mingle", "-Q", QUEUE, "-I", "bench.workflows",
         "-n", f"{QUEUE}@%h", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    return proc


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def _cpu_by_process() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by every process, with its role (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        if int(pid) == os.getpid():
            role = "bench driver + stub"
        elif "celery" in cmd and QUEUE in cmd:
            role = "celery worker"
        elif "bench.workflows_dbos" in cmd:
            role = "dbos worker"
        elif "postgres" in cmd:
            role = "postgresql"
        elif "redis-server" in cmd:
            role = "redis"
        else:
            role = "other"
        out[int(pid)] = (role, used)
    return out


def _cpu_delta(before: dict, after: dict, steps: int) -> dict[str, float]:
    """ms of CPU per step, by role (processes that ended meanwhile are not counted)."""
    out: dict[str, float] = {}
    for pid, (role, used) in after.items():
        out[role] = out.get(role, 0.0) + (used - before.get(pid, (role, 0.0))[1]) * 1000 / steps
    return out


def _engine_batch(n: int) -> tuple[float, list[str]]:
    from workflows.engine import run_start
    from workflows.models import RUN_FINISHED, WorkflowRun

    started = time.perf_counter()
    ids = [run_start(workflow="bench_seven", input={}, triggered_by="bench")[0].pk for _ in range(n)]
    _wait(lambda: WorkflowRun.objects.filter(pk__in=ids, status__in=RUN_FINISHED).count() == n, 300, "runs")
    elapsed = time.perf_counter() - started
    bad = WorkflowRun.objects.filter(pk__in=ids).exclude(status="succeeded").count()
    if bad:
        raise SystemExit(f"{bad} bench runs did not succeed; see var/bench-worker.log")
    return elapsed, ids


def _chain_batch(n: int, url: str, queue: str = QUEUE) -> tuple[float, list[tuple[float, float, float]]]:
    from django.core.cache import cache

    keys, t0s = [uuid.uuid4().hex for _ in range(n)], []
    started = time.perf_counter()
    for key in keys:
        t0s.append(time.time())
        links = [bench_http_call.si(0.0, url, 0).set(queue=queue)]
        links += [bench_http_call.s(url, i).set(queue=queue) for i in range(1, STEPS)]
        links.append(bench_chain_done.s(key).set(queue=queue))
        chain(*links).apply_async()
    _wait(lambda: all(cache.get(f"bench:{k}") for k in keys), 300, "chains")
    elapsed = time.perf_counter() - started
    results = [(t0, *cache.get(f"bench:{k}")) for t0, k in zip(t0s, keys, strict=True)]
    return elapsed, results


def _dbos_url() -> str:
    """The system database URL for DBOS: the bench's own database (DBOS uses schema ``dbos``)."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    return f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _dbos_start(workers: int = 2) -> tuple[list[subprocess.Popen], object]:
    from dbos import DBOSClient

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = []
    for n in range(workers):
        log = open(ROOT / "var" / f"bench-dbos-{n}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.workflows_dbos", _dbos_url()], cwd=ROOT, env=env,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        log.close()
        # One at a time: the first launch creates DBOS's schema.
        ready = ROOT / "var" / f"bench-dbos-{n}.log"
        _wait(lambda ready=ready, proc=procs[-1]: proc.poll() is not None or b"ready" in ready.read_bytes(), 60,
              "a DBOS worker")
        if procs[-1].poll() is not None:
            raise SystemExit(f"the DBOS worker exited; see {ready}")
    client = DBOSClient(system_database_url=_dbos_url(), application_name="berrys-bench")
    _dbos_pause(procs, True)
    return procs, client


def _dbos_pause(procs: list[subprocess.Popen], paused: bool) -> None:
    """Stop the DBOS workers (SIGSTOP) while the others are measured: their queue is polled
    every 10 ms even when empty, which would be charged to the engine and the chain."""
    import signal

    for proc in procs:
        os.killpg(proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)


def _dbos_batch_awake(procs, client, n: int, url: str):
    _dbos_pause(procs, False)
    try:
        return _dbos_batch(client, n, url)
    finally:
        _dbos_pause(procs, True)


def _dbos_reset() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('dbos.workflow_status') IS NOT NULL")
        if cursor.fetchone()[0]:
            cursor.execute("DELETE FROM dbos.workflow_status WHERE name = 'bench_dbos_seven'")
            cursor.execute("VACUUM (ANALYZE) dbos.workflow_status, dbos.operation_outputs")


def _dbos_batch(client, n: int, url: str) -> tuple[float, list[tuple[float, float, float]]]:
    from bench.workflows_dbos import QUEUE as DBOS_QUEUE

    options = {"queue_name": DBOS_QUEUE, "workflow_name": "bench_dbos_seven", "app_version": "bench"}
    started = time.perf_counter()
    handles = []
    for _ in range(n):
        handles.append((time.time(), client.enqueue(options, url)))
    results = [(t0, *handle.get_result(polling_interval_sec=0.05)) for t0, handle in handles]
    return time.perf_counter() - started, results


def _engine_overheads(ids) -> list[float]:
    """Per step: (this step's end - previous step's end) - HTTP time, in ms."""
    from workflows.models import StepAttempt, WorkflowRun

    out = []
    starts = dict(WorkflowRun.objects.filter(pk__in=ids).values_list("pk", "started_at"))
    rows = (StepAttempt.objects.filter(step__run_id__in=ids)
            .values_list("step__run_id", "step__index", "finished_at", "latency_ms")
            .order_by("step__run_id", "step__index"))
    previous: dict = {}
    for run_id, _index, finished, latency in rows:
        begin = previous.get(run_id, starts[run_id])
        out.append((finished - begin).total_seconds() * 1000 - (latency or 0))
        previous[run_id] = finished
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="runs started at once per throughput repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serial", type=int, default=20, help="runs made one at a time for the overhead figure")
    parser.add_argument("--no-dbos", action="store_true", help="leave DBOS Transact out")
    args = parser.parse_args()
    try:
        import dbos  # noqa: F401 - only to know whether the second baseline can run
        with_dbos = not args.no_dbos
    except ImportError:
        print("DBOS Transact is not installed (pip install -e '.[bench]'): measuring without it")
        with_dbos = False

    from registry.models import HealthStatus, Service
    from workflows.models import WorkflowRun

    (ROOT / "var").mkdir(exist_ok=True)
    _ensure_database()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    WorkflowRun.objects.filter(workflow="bench_seven").delete()
    Service.objects.filter(type="BENCH_STUB").delete()
    _vacuum()
    if with_dbos:
        _dbos_reset()
    Service.objects.create(name="bench-stub", type="BENCH_STUB", url=url, status=HealthStatus.PASSING)

    worker = _start_worker()
    dbos_procs, client = [], None
    try:
        if with_dbos:
            dbos_procs, client = _dbos_start()
        # Warm-up (also waits for the worker to come up): imports, connections, pools.
        _engine_batch(4)
        _chain_batch(4, url)
        if with_dbos:
            _dbos_batch_awake(dbos_procs, client, 4, url)

        engine_serial, chain_serial, dbos_serial = [], [], []
        for _ in range(args.serial):
            _, ids = _engine_batch(1)
            engine_serial.extend(_engine_overheads(ids))
            _, results = _chain_batch(1, url)
            for t0, t1, http_ms in results:
                chain_serial.append(((t1 - t0) * 1000 - http_ms) / STEPS)
            if with_dbos:
                _, results = _dbos_batch_awake(dbos_procs, client, 1, url)
                for t0, t1, http_ms in results:
                    dbos_serial.append(((t1 - t0) * 1000 - http_ms) / STEPS)

        engine_rates, chain_rates, dbos_rates = [], [], []
        engine_cpu: list[dict] = []
        chain_cpu: list[dict] = []
        dbos_cpu: list[dict] = []
        for _ in range(args.repeats):  # interleaved, so all see the same machine
            before = _cpu_by_process()
            elapsed, _ = _engine_batch(args.runs)
            engine_cpu.append(_cpu_delta(before, _cpu_by_process(), args.runs * STEPS))
            engine_rates.append(args.runs / elapsed)
            before = _cpu_by_process()
            elapsed, _ = _chain_batch(args.runs, url)
            chain_cpu.append(_cpu_delta(before, _cpu_by_process(), args.runs * STEPS))
            chain_rates.append(args.runs / elapsed)
            if with_dbos:
                before = _cpu_by_process()
                elapsed, _ = _dbos_batch_awake(dbos_procs, client, args.runs, url)
                dbos_cpu.append(_cpu_delta(before, _cpu_by_process(), args.runs * STEPS))
                dbos_rates.append(args.runs / elapsed)
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(20)
        _dbos_pause(dbos_procs, False)
        for proc in dbos_procs:
            os.killpg(proc.pid, 15)
            proc.wait(20)
        if client is not None:
            client.destroy()
        server.shutdown()
        WorkflowRun.objects.filter(workflow="bench_seven").delete()
        if with_dbos:
            _dbos_reset()

    e_over, c_over = statistics.median(engine_serial), statistics.median(chain_serial)
    e_rate, c_rate = statistics.median(engine_rates), statistics.median(chain_rates)
    paired = statistics.median(e / c for e, c in zip(engine_rates, chain_rates, strict=True))
    print(f"\nWorkflow engine vs bare Celery chain — {STEPS} POSTs per run, 1 worker (prefork -c 2)")
    print(f"throughput: {args.runs} runs at once, median of {args.repeats}; overhead: {args.serial} serial runs\n")
    print(f"| {'measure':<40} | {'engine':>10} | {'bare chain':>10} | {'ratio':>8} | {'target':<18} |")
    print(f"|{'-' * 42}|{'-' * 12}|{'-' * 12}|{'-' * 10}|{'-' * 20}|")
    print(f"| {'runs completed per second (median)':<40} | {e_rate:>10.1f} | {c_rate:>10.1f} | "
          f"{e_rate / c_rate:>7.0%} | {'>= 70% of chain':<18} |")
    print(f"| {'  same, median of per-repeat ratios':<40} | {'':>10} | {'':>10} | {paired:>7.0%} | {'':<18} |")
    print(f"| {'orchestration overhead ms/step (median)':<40} | {e_over:>10.2f} | {c_over:>10.2f} | "
          f"{e_over / c_over if c_over else float('nan'):>7.1f}x | {'<= 10 ms/step':<18} |")
    p90 = statistics.quantiles(engine_serial, n=10)[-1]
    print(f"| {'engine overhead ms/step (p90)':<40} | {p90:>10.2f} | {'':>10} | {'':>8} | {'':<18} |")
    if with_dbos:
        d_rate, d_over = statistics.median(dbos_rates), statistics.median(dbos_serial)
        d_paired = statistics.median(e / d for e, d in zip(engine_rates, dbos_rates, strict=True))
        print(f"\nDBOS Transact, same workflow (2 worker processes, one workflow each): {d_rate:.1f} runs/s, "
              f"overhead {d_over:.2f} ms/step")
        print(f"engine / DBOS runs/s: ratio of medians {e_rate / d_rate:.2f}x, median of per-repeat ratios "
              f"{d_paired:.2f}x (target >= 1.1x)")
    print(f"engine / chain per repeat: {[round(e / c, 2) for e, c in zip(engine_rates, chain_rates, strict=True)]} "
          f"(target: median >= 0.7)")
    print("\nCPU per step during the throughput batches, ms (median over repeats), by process:")
    for role in sorted({k for d in engine_cpu + chain_cpu + dbos_cpu for k in d}):
        e = statistics.median(d.get(role, 0.0) for d in engine_cpu)
        c = statistics.median(d.get(role, 0.0) for d in chain_cpu)
        line = f"  {role:<22} engine {e:6.2f}   chain {c:6.2f}"
        if with_dbos:
            line += f"   dbos {statistics.median(d.get(role, 0.0) for d in dbos_cpu):6.2f}"
        print(line)
    print(f"\nraw throughput: engine {[round(r, 1) for r in engine_rates]}, chain {[round(r, 1) for r in chain_rates]}"
          + (f", dbos {[round(r, 1) for r in dbos_rates]}" if with_dbos else ""))


if __name__ == "__main__":
    main()
