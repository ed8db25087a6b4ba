"""Benchmark of the registry's hot paths against a bare DRF ceiling (not a test).

    .venv/bin/python -m bench.registry [--seconds 10] [--repeats 3] [--services 100,1000,10000,100000]

What it does: creates its own PostgreSQL database (``<name>_bench``, dropped at
the end), migrates it, registers 1,000 services of 50 types, starts gunicorn
(2 sync workers, CONN_MAX_AGE=60) and drives 32 connections (keep-alive
clients spread over several processes so the load generator is not the
bottleneck) for N seconds at each of:

* ``ceiling``   — GET /bench/ceiling/{id}: a bare DRF view reading one row by pk
                  (no auth, no throttle; served only by bench/urls.py);
* ``discovery`` — GET /discovery/{type} with an API key;
* ``register``  — POST /registry/services re-registering existing services.
* ``discovery-plain`` — (``--scenarios``) discovery with the pick planned per request instead
                  of prepared (bench/urls.py), to show what the PostgreSQL-only preparation earns.

* ``heartbeat`` — PUT /registry/services/{id}/heartbeat on the bench key's services.

``--services 100,1000,10000,100000`` sweeps the registry's size: the bench key owns the
first size's services (at most 1,000); each next size is reached by one bulk
``INSERT … SELECT generate_series`` of passing services over the same 50 types (the API's
per-key quota and the ORM are too slow to seed 100,000 under load), then every scenario
runs again against the same gunicorn.

``--explain`` prints, after each size, the pick's ``EXPLAIN (ANALYZE, BUFFERS)`` and
``registry_service``'s dead tuples and HOT updates; ``--profile DIR`` cProfiles each gunicorn
worker (bench/gunicorn_profile.py) into DIR; ``--scenarios`` picks a subset.

Each scenario runs ``--repeats`` times, interleaved; the table shows medians, ratios against
the ceiling paired per repeat (median of the per-repeat ratios), and the per-repeat ratios.
Targets (issue 13): discovery >= 90 % of the ceiling's req/s with p99 <= 1.5x at every size;
register >= 60 %; an unchanged heartbeat >= 80 %.
Note gunicorn's sync workers close the connection after each response, so the
clients reconnect per request whatever they ask for (the same for every row).

(Over ~400 lines: one benchmark, with its servers, scenarios and table in one file, so it
runs as one command; it is not portal code.)
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
N_SERVICES = 1000
N_TYPES = 50
TARGETS = {"discovery": (0.90, 1.5), "register": (0.60, None), "heartbeat": (0.80, None)}


def _payload(i: int) -> dict:
    return {
        "name": f"svc-{i:04d}",
        "type": f"TYPE_{i % N_TYPES:02d}",
        "url": f"http://127.0.0.1:{10000 + i}",
        "health_url": f"http://127.0.0.1:{10000 + i}/health",
        "metadata": {"version": "1.0.0"},
    }


# --- seeding (runs in a child process with the bench settings) ----------------------


def seed() -> None:
    import django

    django.setup()
    from registry.auth import api_key_create
    from registry.models import HealthStatus, Service

    # The bench key owns the services it re-registers (only a service's owner may re-register it).
    key, plain = api_key_create(name="bench", scopes=["registry:read", "registry:write"])
    Service.objects.bulk_create(
        [Service(**_payload(i), status=HealthStatus.PASSING, owner=key)
         for i in range(int(os.environ.get("BENCH_OWNED", N_SERVICES)))]
    )
    ids = list(Service.objects.order_by("id").values_list("id", flat=True))
    print(json.dumps({"key": plain, "ids": ids}))


def explain() -> None:
    """The pick's plan with buffers (one type, cursor 0), and the table's update statistics."""
    import django

    django.setup()
    from django.db import connection

    from registry.discovery import _pick

    sql, params = _pick._build(1), _pick.params("TYPE_07", 0)
    with connection.cursor() as cursor:
        for _ in range(2):  # the second run is the warm one
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON) {sql}", params)  # noqa: S608
            plan = [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd, pg_relation_size('registry_service'), "
                       "pg_relation_size('registry_service_pick') FROM pg_stat_user_tables "
                       "WHERE relname = 'registry_service'")
        live, dead, upd, hot, heap, pick = cursor.fetchone()
    shared = [line.strip() for line in plan if "Buffers" in line][:1]
    timing = [line.strip() for line in plan if line.startswith(("Planning Time", "Execution Time"))]
    print(f"  pick plan: {'; '.join(timing)}; top node {'; '.join(shared)}; "
          f"registry_service: {live} live, {dead} dead tuples, {upd} updates ({hot} HOT), "
          f"heap {heap // 8192} pages, pick index {pick // 8192} pages", file=sys.stderr)


# --- load generation --------------------------------------------------------------


def _worker(port, scenario, key, ids, seconds, threads, start_at, out_queue) -> None:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def loop(offset: int) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Token {key}", "Connection": "keep-alive"}
        mine: list[float] = []
        bad = 0
        i = offset
        while time.time() < start_at:
            time.sleep(0.001)
        deadline = start_at + seconds
        while True:
            now = time.perf_counter()
            if time.time() >= deadline:
                break
            if scenario == "ceiling":
                method, path, body, ok = "GET", f"/bench/ceiling/{ids[i % len(ids)]}", None, 200
            elif scenario == "discovery":
                method, path, body, ok = "GET", f"/discovery/TYPE_{i % N_TYPES:02d}", None, 200
            elif scenario == "discovery-plain":
                method, path, body, ok = "GET", f"/bench/discovery-plain/TYPE_{i % N_TYPES:02d}", None, 200
            elif scenario == "heartbeat":
                method, path, body, ok = "PUT", f"/registry/services/{ids[i % len(ids)]}/heartbeat", None, 200
            else:
                method, path, ok = "POST", "/registry/services", 200
                body = json.dumps(_payload(i % len(ids)))
                headers["Content-Type"] = "application/json"
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != ok:
                    bad += 1
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            mine.append(time.perf_counter() - now)
            i += 7919  # spread over rows and types
        conn.close()
        with lock:
            latencies.extend(mine)
            errors += bad

    pool = [threading.Thread(target=loop, args=(n * 131,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out_queue.put((latencies, errors))


def _server_pids(gunicorn_pid: int, db_url: str) -> list[int]:
    """gunicorn's workers and the PostgreSQL backends serving the bench database."""
    import psycopg

    pids = []
    for task in Path(f"/proc/{gunicorn_pid}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    parts = urlsplit(db_url)
    with psycopg.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
                         dbname=parts.path.lstrip("/"), autocommit=True) as conn:
        pids += [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
    return pids


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return out


def run_load(*, port, scenario, key, ids, seconds, connections, processes, server=None) -> dict:
    """``server``: (gunicorn pid, database URL) to also count the server's CPU per request:
    gunicorn's workers plus their PostgreSQL backends (Redis, shared, is not counted). Unlike
    req/s on a shared machine, CPU per request hardly moves with other load."""
    before = _cpu_seconds(_server_pids(*server)) if server else {}
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    per = [connections // processes + (1 if n < connections % processes else 0) for n in range(processes)]
    start_at = time.time() + 0.5
    procs = [
        ctx.Process(target=_worker, args=(port, scenario, key, ids, seconds, threads, start_at, queue))
        for threads in per if threads
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    latencies = sorted(lat for lats, _ in results for lat in lats)
    errors = sum(err for _, err in results)
    cpu_ms = float("nan")
    if server and latencies:
        after = _cpu_seconds(_server_pids(*server))
        used = sum(t - before.get(pid, 0.0) for pid, t in after.items())
        cpu_ms = used / len(latencies) * 1000
    if not latencies:
        return {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": errors, "cpu": cpu_ms}
    return {
        "cpu": cpu_ms,
        "rps": len(latencies) / seconds,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": errors,
    }


# --- orchestration ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin_sql(base_url: str, *statements: str) -> None:
    import psycopg

    parts = urlsplit(base_url)
    with psycopg.connect(
        host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
        password=parts.password or None, dbname="postgres", autocommit=True,
    ) as conn:
        for sql in statements:
            conn.execute(sql)


def _grow(db_url: str, start: int, end: int) -> None:
    """Services start+1..end (passing, unowned, 50 types) in one INSERT ... SELECT: seeding
    100,000 through the API (or the ORM) would take longer than the bench under load."""
    parts = urlsplit(db_url)
    import psycopg

    columns = ("name, type, url, health_url, metadata, capabilities, endpoints, tags, criticality, status, "
               "status_reason, registered_at, updated_at, check_interval_seconds, check_timeout_seconds, "
               "failures_before_critical, successes_before_passing, consecutive_failures, "
               "consecutive_successes, pending_approval, create_index, modify_index")
    values = (f"'bulk-' || n, 'TYPE_' || lpad((n % {N_TYPES})::text, 2, '0'), 'http://127.0.0.1/' || n, '', "
              "'{}', '[]', '[]', '[]', 'non_critical', 'passing', '', now(), now(), 15, 5.0, 2, 1, 0, 0, false, 0, 0")
    with psycopg.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
                         dbname=parts.path.lstrip("/"), autocommit=True) as conn:
        conn.execute(f"INSERT INTO registry_service ({columns}) SELECT {values} "
                     f"FROM generate_series({start + 1}, {end}) AS g(n)")
        conn.execute("ANALYZE registry_service")


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("gunicorn exited during start-up")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status in (200, 503):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not answer in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--services", default=str(N_SERVICES),
                        help="Registered services, a comma-separated sweep, e.g. 100,1000,10000,100000")
    parser.add_argument("--port", type=int, default=0, help="gunicorn's port (default: a free one)")
    parser.add_argument("--scenarios", default="ceiling,discovery,register,heartbeat",
                        help="Comma-separated subset (the ceiling always runs: ratios are paired with it)")
    parser.add_argument("--profile", metavar="DIR",
                        help="cProfile each gunicorn worker (bench/gunicorn_profile.py); dumps in DIR at the end")
    parser.add_argument("--explain", action="store_true",
                        help="After each size: the pick's EXPLAIN (ANALYZE, BUFFERS) and registry_service's "
                             "dead tuples and HOT updates")
    parser.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--explain-now", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        seed()
        return
    if args.explain_now:
        explain()
        return

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_reg")
    parts = urlsplit(base)
    db_name = parts.path.lstrip("/") + "_bench"
    db_url = parts._replace(path=f"/{db_name}").geturl()
    env = dict(
        os.environ,
        DATABASE_URL=db_url,
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/1"),
        DJANGO_SETTINGS_MODULE="bench.settings_bench",
        DJANGO_ENV="development",
        DEBUG="0",
        CONN_MAX_AGE="60",
        API_WRITE_THROTTLE_RATE="100000000/min",  # measure the path, not the limiter's refusal
        PYTHONPATH=str(ROOT),
    )
    sizes = sorted(int(n) for n in args.services.split(","))
    env["BENCH_OWNED"] = str(min(sizes[0], N_SERVICES))
    _admin_sql(base, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)', f'CREATE DATABASE "{db_name}"')
    gunicorn = None
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        seeded = subprocess.run([sys.executable, "-m", "bench.registry", "--seed"], cwd=ROOT, env=env, check=True,
                                capture_output=True, text=True)
        data = json.loads(seeded.stdout.strip().splitlines()[-1])
        port = args.port or _free_port()
        profile = []
        if args.profile:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            env["BENCH_PROFILE_DIR"] = str(Path(args.profile).resolve())
            profile = ["-c", str(ROOT / "bench" / "gunicorn_profile.py")]
        gunicorn = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "berrys_portal.wsgi:application", *profile,
             "--workers", str(args.workers), "--worker-class", "sync", "--bind", f"127.0.0.1:{port}",
             "--backlog", "2048", "--log-level", "warning"],
            cwd=ROOT, env=env, start_new_session=True,
        )
        _wait_ready(port, gunicorn)
        scenarios = ("ceiling", *(s for s in args.scenarios.split(",") if s and s != "ceiling"))
        seeded_count = int(env["BENCH_OWNED"])
        for size in sizes:
            if size > seeded_count:
                started = time.monotonic()
                _grow(db_url, seeded_count, size)
                print(f"  grown to {size} services in {time.monotonic() - started:.0f} s", file=sys.stderr)
                seeded_count = size
            runs: dict[str, list[dict]] = {s: [] for s in scenarios}
            for s in scenarios:  # warm-up: connections, imports, caches
                run_load(port=port, scenario=s, key=data["key"], ids=data["ids"], seconds=2,
                         connections=args.connections, processes=args.processes)
            for rep in range(args.repeats):
                for s in scenarios:
                    result = run_load(port=port, scenario=s, key=data["key"], ids=data["ids"],
                                      seconds=args.seconds, connections=args.connections,
                                      processes=args.processes, server=(gunicorn.pid, db_url))
                    runs[s].append(result)
                    print(f"  {size} services, run {rep + 1} {s:<9} {result['rps']:8.0f} req/s  "
                          f"p50 {result['p50']:6.1f} ms  p99 {result['p99']:6.1f} ms  errors {result['errors']}  "
                          f"server CPU {result['cpu']:.2f} ms/req",
                          file=sys.stderr)
            if args.explain:
                subprocess.run([sys.executable, "-m", "bench.registry", "--explain-now"], cwd=ROOT, env=env,
                               check=False)
            _print_table(runs, args, size)
    finally:
        if gunicorn is not None:
            os.killpg(gunicorn.pid, signal.SIGTERM)
            try:
                gunicorn.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(gunicorn.pid, signal.SIGKILL)
        _admin_sql(base, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def _print_table(runs: dict[str, list[dict]], args, size: int) -> None:
    """Medians per scenario; ratios are medians of per-repeat ratios (each scenario against the
    ceiling of the same repeat, measured seconds apart), which cancels most of the drift that
    other load on the machine causes between repeats."""
    med = {s: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99", "errors", "cpu")}
           for s, rs in runs.items()}
    ceilings = runs["ceiling"]

    def paired(s: str, k: str) -> float:
        ratios = [r[k] / c[k] for r, c in zip(runs[s], ceilings, strict=True) if c[k]]
        return statistics.median(ratios) if ratios else float("nan")

    print(f"\nRegistry bench: gunicorn {args.workers} sync workers, CONN_MAX_AGE=60, PostgreSQL, "
          f"{size} services / {N_TYPES} types, {args.connections} connections, "
          f"{args.seconds:g} s x {args.repeats} runs (medians; ratios paired per run)\n")
    header = f"| {'scenario':<10} | {'req/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} | {'req/s vs ceiling':>16} " \
             f"| {'p99 vs ceiling':>14} | {'errors':>6} | target | per-repeat ratios " \
             f"| server CPU ms/req | capacity vs ceiling (CPU) |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for s, m in med.items():
        ratio, p99_ratio = paired(s, "rps"), paired(s, "p99")
        if s in TARGETS:
            min_ratio, max_p99 = TARGETS[s]
            ok = ratio >= min_ratio and (max_p99 is None or p99_ratio <= max_p99)
            target = f">={min_ratio:.0%}" + (f", p99<={max_p99}x" if max_p99 else "") + (" ok" if ok else " MISS")
        else:
            target = "baseline"
        per_repeat = ", ".join(f"{r['rps'] / c['rps']:.2f}" for r, c in zip(runs[s], ceilings, strict=True)
                               if c["rps"])
        cpu_ratio = statistics.median(c["cpu"] / r["cpu"] for r, c in zip(runs[s], ceilings, strict=True))
        print(f"| {s:<10} | {m['rps']:>7.0f} | {m['p50']:>7.1f} | {m['p99']:>7.1f} | {ratio:>16.0%} "
              f"| {p99_ratio:>13.2f}x | {m['errors']:>6.0f} | {target} | {per_repeat} "
              f"| {m['cpu']:.2f} | {cpu_ratio:.2f}x |")


if __name__ == "__main__":
    main()
