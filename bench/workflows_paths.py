"""Benchmark: which hot-path SQL of the engine earns its place (not a test; prints a table).

Run from the repository root::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_wf_bench REDIS_URL=redis://127.0.0.1:6379/3 \\
        .venv/bin/python -m bench.workflows_paths [--rounds 12] [--runs 10]

In this process (no broker, no worker): the 7-step workflow of ``bench/workflows.py`` is
driven through ``step_execute`` with an inline budget, so each run is one claim and seven
step-boundary statements, against the same loopback stub. Three ways of writing a step
boundary alternate round by round (same process, same connection, same machine minute):

* ``sql, prepared``: the hand-written statements as server-side prepared statements (default);
* ``sql``: the same statements, planned on every execution (``WORKFLOW_PREPARED_STATEMENTS=0``);
* ``orm``: the portable ORM transaction (what SQLite runs).

Per step: wall time (including the HTTP call, the same in every mode), and CPU of this
process plus its PostgreSQL backend (read from /proc), medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from http.server import ThreadingHTTPServer

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("WORKFLOW_QUEUE", "wf-paths-parking")

from bench.workflows import STEPS, Stub, _ensure_database, _vacuum  # noqa: E402 - sets Django up

MODES = ("sql, prepared", "sql", "orm")


def _backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--runs", type=int, default=10, help="runs per mode per round")
    args = parser.parse_args()

    from django.conf import settings
    from django.db import connection

    from berrys_portal.celery import app
    from registry.models import HealthStatus, Service
    from workflows.engine import run_start, statements, step_execute
    from workflows.models import WorkflowRun

    _ensure_database()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    WorkflowRun.objects.filter(workflow="bench_seven").delete()
    Service.objects.filter(type="BENCH_STUB").delete()
    _vacuum()
    Service.objects.create(name="bench-stub", type="BENCH_STUB", url=url, status=HealthStatus.PASSING)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    real_hot_sql = statements.hot_sql

    def drive(mode: str, n: int) -> tuple[float, float]:
        settings.WORKFLOW_PREPARED_STATEMENTS = mode == "sql, prepared"
        statements.hot_sql = real_hot_sql if mode.startswith("sql") else (lambda: False)
        firsts = [run_start(workflow="bench_seven", input={}, triggered_by="bench")[0].steps.get(index=0).pk
                  for _ in range(n)]
        wall, cpu = time.perf_counter(), time.process_time() + _backend_cpu(backend)
        for step_id in firsts:
            assert step_execute(step_id=step_id, inline_seconds=60) == "succeeded"
        wall, cpu = time.perf_counter() - wall, time.process_time() + _backend_cpu(backend) - cpu
        return wall * 1000 / (n * STEPS), cpu * 1000 / (n * STEPS)

    results: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    try:
        for mode in MODES:
            drive(mode, 3)  # warm-up: imports, discovery view, prepared statements
        for r in range(args.rounds):
            for mode in MODES[r % 3:] + MODES[:r % 3]:  # rotate the order
                results[mode].append(drive(mode, args.runs))
    finally:
        statements.hot_sql = real_hot_sql
        server.shutdown()
        WorkflowRun.objects.filter(workflow="bench_seven").delete()
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(settings.WORKFLOW_QUEUE)

    base = statistics.median(w for w, _ in results["sql, prepared"])
    print(f"\nEngine step boundary, {args.rounds} rounds x {args.runs} runs x {STEPS} steps per mode, inline, "
          "in one process (HTTP call to a loopback stub included)\n")
    print(f"| {'path':<16} | {'wall ms/step':>12} | {'vs sql, prepared':>16} | {'CPU ms/step (python + backend)':>30} |")
    print(f"|{'-' * 18}|{'-' * 14}|{'-' * 18}|{'-' * 32}|")
    for mode in MODES:
        wall = statistics.median(w for w, _ in results[mode])
        cpu = statistics.median(c for _, c in results[mode])
        print(f"| {mode:<16} | {wall:>12.2f} | {wall - base:>+15.2f}  | {cpu:>30.2f} |")


if __name__ == "__main__":
    main()
