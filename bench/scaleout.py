"""Benchmark: the workflow engine scaling out — more worker processes, more hosts (prints a table).

Two modes, run from the repository root (``-m`` matters)::

    # 1. one worker process vs two, engine and bare Celery chain, interleaved in one run
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_scaleout REDIS_URL=redis://127.0.0.1:6379/2 \\
        nice -n 5 .venv/bin/python -m bench.scaleout workers [--runs 60] [--repeats 5]

    # 2. the same two worker processes on one host vs split over two hosts (as root:
    #    network namespaces, private PostgreSQL and Redis on a database host of their own)
    nice -n 5 .venv/bin/python -m bench.scaleout hosts [--runs 60] [--repeats 5]

The work is ``bench/workflows.py``'s: a 7-step workflow (7 POSTs to an HTTP stub) against the same
7 POSTs as a bare Celery chain that persists nothing. A "worker process" is one
``celery worker -P prefork -c 1`` (one pool process). Every configuration being compared runs
at the same time on a queue of its own, so a batch sent to one queue is served by exactly that
configuration's workers while the others idle; the configurations alternate within each repeat
(A B, then B A) so that the machine's drift hits both alike. Each batch starts ``--runs`` runs at
once and counts runs completed per second.

The stub runs in a process of its own. Engine batches create their runs in one transaction
before the clock starts (``--starts committed``, the default) and send their first messages at
its commit, on the clock, as the chain's ``apply_async`` calls are: starting runs is the web
tier's work, and one driver thread doing it on the clock (``--starts serial``, 0.63 s for 200
starts on this machine) put a serial part into the engine's figure only. ``--stub-ms`` gives the
stub a latency (a service doing some work; default 0, so the orchestration's own cost is all
that is measured). Besides runs/s it prints CPU per step by process (workers, PostgreSQL, Redis,
stub, driver), how busy the machine was, WAL bytes, syncs, full-page images and MultiXacts per
step, and with ``--locks`` what the database's backends waited on.

``workers`` prints, per repeat, each speed-up (2 processes / 1 process) and the ratio engine
speed-up / chain speed-up (target >= 0.9), then the medians. ``hosts`` builds the hosts with
``tests/multihost/fabric.py`` (namespaces ``durab-<run>-<host>``, deleted at exit): ``db``
(PostgreSQL + Redis as broker), ``w1`` and ``w2`` (workers), ``ctl`` (this driver and the stub);
"one host" is two worker processes on ``w1``, "two hosts" one on ``w1`` and one on ``w2``; it prints
the ratio two hosts / one host (target >= 0.9), for the chain too. Where namespaces cannot be made
it says why and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench import machine

ROOT = Path(__file__).resolve().parents[1]
RUN = uuid.uuid4().hex[:6]


# --------------------------------------------------------------------------- the driver


def _wait_for_workers(configs: list[tuple[str, str, int]], timeout: float = 120) -> None:
    from berrys_portal.celery import app

    deadline = time.monotonic() + timeout
    while True:
        names = {name for reply in app.control.ping(timeout=1.0) for name in reply}
        missing = [(q, n) for _, q, n in configs if sum(name.startswith(f"{q}-") for name in names) < n]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"workers not up after {timeout}s: {missing} (have {sorted(names)})")


def _serve_stub(host: str, ports, latency_ms: float = 0.0) -> None:
    """The stub, in a process of its own: the driver's starts and polls never hold its GIL.
    ``latency_ms``: each answer waits that long first (a service that does some work)."""
    from http.server import ThreadingHTTPServer

    from bench import workflows as wf

    class Stub(wf.Stub):
        def do_POST(self):  # noqa: N802 - http.server's naming
            if latency_ms:
                time.sleep(latency_ms / 1000)
            super().do_POST()

    server = ThreadingHTTPServer((host, 0), Stub)
    server.daemon_threads = True
    ports.put(server.server_address[1])
    server.serve_forever()


def _engine_batch_committed(n: int) -> tuple[float, list[int]]:
    """``n`` runs created in one transaction before the clock starts; their first messages go
    out at its commit, on the clock (as the chain's ``apply_async`` calls are)."""
    from django.db import transaction

    from bench import workflows as wf
    from workflows.engine import run_start
    from workflows.models import RUN_FINISHED, WorkflowRun

    with transaction.atomic():
        ids = [run_start(workflow="bench_seven", input={}, triggered_by="bench")[0].pk for _ in range(n)]
        started = time.perf_counter()
    wf._wait(lambda: WorkflowRun.objects.filter(pk__in=ids, status__in=RUN_FINISHED).count() == n, 300, "runs")
    elapsed = time.perf_counter() - started
    if WorkflowRun.objects.filter(pk__in=ids).exclude(status="succeeded").exists():
        raise SystemExit("bench runs did not succeed; see var/bench-scaleout-*.log")
    return elapsed, ids


def drive(configs: list[tuple[str, str, int]], *, runs: int, chain_runs: int, repeats: int, stub_host: str,
          sample_locks: bool = False, starts: str = "committed", stub_ms: float = 0.0) -> dict:
    """Measure every configuration (label, queue, worker processes); runs/s per repeat."""
    import multiprocessing

    from django.conf import settings

    from bench import workflows as wf
    from registry.models import HealthStatus, Service
    from workflows.models import WorkflowRun

    wf._ensure_database()
    ctx = multiprocessing.get_context("fork")
    ports = ctx.SimpleQueue()
    stub = ctx.Process(target=_serve_stub, args=(stub_host, ports, stub_ms), daemon=True)
    stub.start()
    url = f"http://{stub_host}:{ports.get()}"
    WorkflowRun.objects.filter(workflow="bench_seven").delete()
    Service.objects.filter(type="BENCH_STUB").delete()
    wf._vacuum()
    Service.objects.create(name="bench-stub", type="BENCH_STUB", url=url, status=HealthStatus.PASSING)

    kinds = ["engine", "chain"]
    sizes = {"engine": runs, "chain": chain_runs}
    rates = {label: {k: [] for k in kinds} for label, _, _ in configs}
    cpu = {label: {k: [] for k in kinds} for label, _, _ in configs}
    markers = {label: f"-Q {queue} " for label, queue, _ in configs}
    # Where the rest of the CPU goes: the database, the broker, the stub, this driver.
    others = {"postgresql": "postgres: ", "redis": "redis-server"}
    pids = {"stub": stub.pid, "driver": os.getpid()}
    roles: dict = {label: {k: {} for k in kinds} for label, _, _ in configs}
    busy = {label: {k: [] for k in kinds} for label, _, _ in configs}  # the machine's CPU use per batch
    wal = {label: {k: [] for k in kinds} for label, _, _ in configs}  # WAL per step (whole server)

    sampler = machine.LockSampler() if sample_locks else None

    def batch(kind: str, queue: str, n: int, label: str | None = None) -> float:
        if kind == "engine":
            settings.WORKFLOW_QUEUE = queue  # the engine reads it per call
            if sampler:
                sampler.label = label
            elapsed, ids = (_engine_batch_committed if starts == "committed" else wf._engine_batch)(n)
            if sampler:
                sampler.label = None
            WorkflowRun.objects.filter(pk__in=ids).delete()  # every batch starts from the same tables
        else:
            elapsed, _ = wf._chain_batch(n, url, queue=queue)
        return n / elapsed

    try:
        _wait_for_workers(configs)
        for _, queue, n in configs:  # warm-up: imports, connections, pools of every process
            for kind in kinds:
                batch(kind, queue, 4 * n)
        for r in range(repeats):
            order = configs if r % 2 == 0 else configs[::-1]
            for label, queue, _ in order:
                for kind in kinds:
                    before, busy0, lsn0 = machine.cpu_of({**markers, **others}, pids), machine.busy(), machine.wal()
                    rates[label][kind].append(batch(kind, queue, sizes[kind], label))
                    used = machine.cpu_delta(before, machine.cpu_of({**markers, **others}, pids))
                    busy1 = machine.busy()
                    busy[label][kind].append((busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1))
                    wal[label][kind].append([(b - a) / (sizes[kind] * wf.STEPS) for a, b in zip(lsn0, machine.wal(), strict=True)])
                    per_step = {role: used.get(role, 0.0) * 1000 / (sizes[kind] * wf.STEPS)
                                for role in [label, *others, *pids]}
                    cpu[label][kind].append(per_step[label])
                    for role, ms in per_step.items():
                        roles[label][kind].setdefault("workers" if role == label else role, []).append(ms)
            print(f"repeat {r + 1}/{repeats}: " + ", ".join(
                f"{label} {k} {rates[label][k][-1]:.1f}/s" for label, _, _ in configs for k in kinds),
                file=sys.stderr, flush=True)
    finally:
        stub.terminate()
        WorkflowRun.objects.filter(workflow="bench_seven").delete()
    got = {"rates": rates, "worker_cpu_ms_per_step": cpu, "cpu_ms_per_step_by_role": roles, "machine_busy": busy,
           "wal_per_step": wal}
    if sampler:
        got["lock_waits"] = {"samples": sampler.samples, "statements": sampler.waits, "states": sampler.states}
    return got


def _worker_cmd(queue: str, index: int) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "berrys_portal", "worker", "-P", "prefork", "-c", "1",
            "--without-heartbeat", "--without-gossip", "--without-mingle", "-Q", queue, "-I", "bench.workflows",
            "-n", f"{queue}-{index}@%h", "--loglevel", "WARNING"]


# --------------------------------------------------------------------------- reports


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def _report_workers(got: dict, args, load_before: str) -> None:
    r, c = got["rates"], got["worker_cpu_ms_per_step"]
    e_up = _ratios(r["2 processes"]["engine"], r["1 process"]["engine"])
    c_up = _ratios(r["2 processes"]["chain"], r["1 process"]["chain"])
    rel = _ratios(e_up, c_up)
    print(f"\nWorker scaling — 7 POSTs per run, {args.runs} runs ({args.chain_runs} chains) at once, "
          "1 vs 2 worker processes "
          f"(prefork -c 1 each), {args.repeats} repeats, engine starts: {args.starts}, stub latency {args.stub_ms:g} ms")
    print(f"load average before {load_before}, after {_load()}\n")
    print("| repeat | engine 1 → 2 (runs/s) | speed-up | chain 1 → 2 (runs/s) | speed-up | engine / chain |")
    print("|---|---|---|---|---|---|")
    for i in range(args.repeats):
        print(f"| {i + 1} | {r['1 process']['engine'][i]:.1f} → {r['2 processes']['engine'][i]:.1f} | "
              f"{e_up[i]:.2f}× | {r['1 process']['chain'][i]:.1f} → {r['2 processes']['chain'][i]:.1f} | "
              f"{c_up[i]:.2f}× | {rel[i]:.2f} |")
    med = statistics.median
    print(f"| median | {med(r['1 process']['engine']):.1f} → {med(r['2 processes']['engine']):.1f} | "
          f"{med(e_up):.2f}× | {med(r['1 process']['chain']):.1f} → {med(r['2 processes']['chain']):.1f} | "
          f"{med(c_up):.2f}× | **{med(rel):.2f}** (target ≥ 0.9) |")
    print(f"\nratio of the median speed-ups: {med(e_up) / med(c_up):.2f}")
    print("\nworker CPU ms per step (median): " + ", ".join(
        f"{label} {kind} {med(c[label][kind]):.2f}" for label in c for kind in c[label]))


def _report_roles(got: dict) -> None:
    """CPU ms per step by process role (medians over repeats; the engine's include its starts)."""
    med = statistics.median
    print("\nCPU ms per step by role (median; the engine's rows include creating its runs):")
    by_config = got["cpu_ms_per_step_by_role"]
    names = list(by_config[next(iter(by_config))]["engine"])
    print("| configuration | kind | " + " | ".join(names) + " | total | machine CPU busy | WAL bytes, syncs, full pages, MultiXacts per step |")
    print("|---|---|" + "---|" * (len(names) + 3))
    for label, kinds in by_config.items():
        for kind, by_role in kinds.items():
            values = [med(v) for v in by_role.values()]
            print(f"| {label} | {kind} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {sum(values):.2f} | "
                  f"{med(got['machine_busy'][label][kind]):.0%} | " + ", ".join(
                      f"{med(v[i] for v in got['wal_per_step'][label][kind]):,.2f}" for i in range(4)) + " |")


def _report_locks(got: dict) -> None:
    if "lock_waits" not in got:
        return
    print("\nPostgreSQL lock waits during engine batches (pg_stat_activity every 20 ms):")
    for label, (n, waiting) in got["lock_waits"]["samples"].items():
        print(f"  {label}: {waiting} of {n} samples had a backend waiting on a lock ({waiting / max(n, 1):.1%})")
    for key, n in sorted(got["lock_waits"]["statements"].items(), key=lambda kv: -kv[1])[:5]:
        print(f"    {n:>5}× {key}")
    print("\nWhat the database's backends were doing (share of backend samples during engine batches):")
    for label, states in got["lock_waits"]["states"].items():
        total = sum(states.values()) or 1
        print(f"  {label}: " + ", ".join(f"{what} {n / total:.1%}"
                                         for what, n in sorted(states.items(), key=lambda kv: -kv[1])[:6]))


def _report_hosts(got: dict, args, load_before: str) -> None:
    r, c = got["rates"], got["worker_cpu_ms_per_step"]
    med = statistics.median
    print(f"\nOne worker host vs two — 2 worker processes (prefork -c 1 each) in all, database + broker on a "
          f"host of their own (network namespaces), {args.runs} runs ({args.chain_runs} chains) at once, "
          f"{args.repeats} repeats, engine starts: {args.starts}")
    print(f"load average before {load_before}, after {_load()}\n")
    print("| repeat | engine one host | engine two hosts | two / one | chain one host | chain two hosts | two / one |")
    print("|---|---|---|---|---|---|---|")
    e_rel = _ratios(r["two hosts"]["engine"], r["one host"]["engine"])
    c_rel = _ratios(r["two hosts"]["chain"], r["one host"]["chain"])
    for i in range(args.repeats):
        print(f"| {i + 1} | {r['one host']['engine'][i]:.1f} | {r['two hosts']['engine'][i]:.1f} | {e_rel[i]:.2f} | "
              f"{r['one host']['chain'][i]:.1f} | {r['two hosts']['chain'][i]:.1f} | {c_rel[i]:.2f} |")
    print(f"| median | {med(r['one host']['engine']):.1f} | {med(r['two hosts']['engine']):.1f} | "
          f"**{med(e_rel):.2f}** (target ≥ 0.9) | {med(r['one host']['chain']):.1f} | "
          f"{med(r['two hosts']['chain']):.1f} | {med(c_rel):.2f} |")
    print(f"\nratio of the medians: engine {med(r['two hosts']['engine']) / med(r['one host']['engine']):.2f}, "
          f"chain {med(r['two hosts']['chain']) / med(r['one host']['chain']):.2f}")
    print("\nworker CPU ms per step (median): " + ", ".join(
        f"{label} {kind} {med(c[label][kind]):.2f}" for label in c for kind in c[label]))


# --------------------------------------------------------------------------- modes


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def mode_workers(args) -> None:
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_scaleout")
    os.environ.setdefault("BENCH_QUEUE", f"scaleout-{RUN}")
    from bench import workflows  # noqa: F401 - Django set up, the workflow and the chain's tasks registered

    configs = [("1 process", f"so1-{RUN}", 1), ("2 processes", f"so2-{RUN}", 2)]
    (ROOT / "var").mkdir(exist_ok=True)
    procs = []
    for _, queue, n in configs:
        for k in range(n):
            env = dict(os.environ, WORKFLOW_QUEUE=queue, PYTHONPATH=str(ROOT), LOG_LEVEL="WARNING")
            with open(ROOT / "var" / f"bench-scaleout-{n}p-{k}.log", "wb") as log:
                procs.append(subprocess.Popen(_worker_cmd(queue, k), cwd=ROOT, env=env, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
    load_before = _load()
    try:
        got = drive(configs, runs=args.runs, chain_runs=args.chain_runs, repeats=args.repeats, stub_host="127.0.0.1",
                    sample_locks=args.locks, starts=args.starts, stub_ms=args.stub_ms)
    finally:
        _stop(procs)
    _report_workers(got, args, load_before)
    _report_roles(got)
    _report_locks(got)


def mode_hosts(args) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.multihost.fabric import Fabric, addr, unavailable

    prefix = f"durab-{RUN}-"
    why = unavailable(prefix)
    if why:
        print(f"bench.scaleout hosts: cannot run here: {why}. (Needs root, iproute2, util-linux, "
              "PostgreSQL server binaries and redis-server.)", file=sys.stderr)
        raise SystemExit(2)
    fab = Fabric(prefix)
    try:
        fab.build(hosts=("db", "w1", "w2", "ctl"))
        fab.start_database()
        env = {"LOG_LEVEL": "WARNING"}
        migrated = subprocess.run(["ip", "netns", "exec", prefix + "ctl", sys.executable, "manage.py", "migrate",
                                   "--noinput", "-v", "0"], cwd=ROOT, env=fab.env, capture_output=True)
        if migrated.returncode:
            raise SystemExit(f"migrate failed:\n{migrated.stderr.decode()[-3000:]}")
        one, two = f"one-{RUN}", f"two-{RUN}"
        for name, host, queue, k in (("a", "w1", one, 0), ("b", "w1", one, 1), ("c", "w1", two, 0),
                                     ("d", "w2", two, 1)):
            fab.spawn(f"worker-{name}", host, _worker_cmd(queue, k), env={**env, "WORKFLOW_QUEUE": queue})
        load_before = _load()
        out = subprocess.run(
            ["ip", "netns", "exec", prefix + "ctl", sys.executable, "-m", "bench.scaleout", "_drive",
             "--config", f"one host={one}:2", "--config", f"two hosts={two}:2", "--stub-host", addr("ctl"),
             "--runs", str(args.runs), "--chain-runs", str(args.chain_runs), "--repeats", str(args.repeats),
             "--starts", args.starts, "--stub-ms", str(args.stub_ms), *(["--locks"] if args.locks else [])],
            cwd=ROOT, env={**fab.env, **env, "BENCH_QUEUE": f"warm-{RUN}"}, stdout=subprocess.PIPE)
        if out.returncode:
            for name in "abcd":
                print(f"--- worker-{name}\n{fab.log(f'worker-{name}')[-2000:]}", file=sys.stderr)
            raise SystemExit("the driver failed (above)")
        got = json.loads(out.stdout.decode().strip().splitlines()[-1])
    finally:
        fab.teardown()
    _report_hosts(got, args, load_before)
    _report_roles(got)
    _report_locks(got)


def mode_drive(args) -> None:
    """Inside the ctl namespace: measure and print the figures as one JSON line."""
    configs = []
    for spec in args.config:
        label, rest = spec.split("=", 1)
        queue, n = rest.rsplit(":", 1)
        configs.append((label, queue, int(n)))
    got = drive(configs, runs=args.runs, chain_runs=args.chain_runs, repeats=args.repeats, stub_host=args.stub_host,
                sample_locks=args.locks, starts=args.starts, stub_ms=args.stub_ms)
    print(json.dumps(got), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["workers", "hosts", "_drive"])
    parser.add_argument("--runs", type=int, default=60, help="runs started at once per batch")
    parser.add_argument("--chain-runs", type=int, default=None,
                        help="chains started at once per batch (default 2 x --runs: the chain is ~2x faster, "
                             "so both kinds of batch last about as long)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--locks", action="store_true",
                        help="sample pg_stat_activity during engine batches: how often a backend waits on a lock")
    parser.add_argument("--starts", choices=["committed", "serial"], default="committed",
                        help="committed (default): a batch's runs are created in one transaction before the "
                             "clock starts, their messages sent at its commit, on the clock; serial: the driver "
                             "calls run_start once per run on the clock (the web tier's work, done by one thread)")
    parser.add_argument("--stub-ms", type=float, default=0.0,
                        help="the stub's latency per call in ms (default 0: an instant service, so the "
                             "orchestration's own cost is all there is to measure)")
    parser.add_argument("--config", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--stub-host", default="127.0.0.1", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.chain_runs = args.chain_runs or 2 * args.runs
    # SIGTERM (``timeout``, a CI runner) unwinds like Ctrl-C: workers stopped, namespaces deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    {"workers": mode_workers, "hosts": mode_hosts, "_drive": mode_drive}[args.mode](args)


if __name__ == "__main__":
    main()
