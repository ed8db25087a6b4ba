"""Benchmark of the health sweep (not a test): prints a table of figures.

Scenarios (health and egress issues), the prober on aiohttp under the egress policy:
  A. 1,000 services, 10 % hang past their 2 s timeout: sweep wall time (target ≤ 3.5 s),
     beside a bare aiohttp loop (500 in flight) over the same URLs.
  B. 10,000 healthy services: sweep wall time including database writes (target ≤ 20 s),
     against a bare aiohttp loop (64 in flight, the sweep's concurrency) over the same
     URLs in the same run, as a throughput ratio (goal ≥ 0.7). Each round resets every
     service to unknown, so each measured sweep writes 10,000 status transitions; a
     steady-state sweep (the same services, already passing) is reported beside it.
  C. ``manage.py check_health --all`` over scenario A's 1,000 services (its 100 hanging
     ones turning critical, with status changes, breaker events and alerts): wall time
     minus Django's own start-up (``manage.py check`` in the same run), target ≤ 3.5 s.
  W. (``--only W``) each PostgreSQL-specific statement of the health code against its ORM
     twin, on B's 10,000 services: what keeps it (figures in the modules' docstrings).

The services are spread over ``--servers`` processes × ``--ports`` ports each: the prober
limits concurrency and rate per destination (address and port), as it must against a
hostile registrant, so the services of one benchmark look like many small services, not
thousands of them behind one port.

Run (uses your own database and Redis db; creates and deletes BENCH_HEALTH services):
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_egress REDIS_URL=redis://127.0.0.1:6379/4 \\
        .venv/bin/python bench/health.py [--repeats 3] [--services 10000] [--servers 4] [--ports 50]

(Over ~400 lines: one benchmark, with its servers, scenarios and table in one file, so it
runs as one command; it is not portal code.)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
# As in production: DEBUG wraps every query in a recording cursor (the worker inherits this).
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("LOG_LEVEL", "WARNING")

BENCH_TYPE = "BENCH_HEALTH"
HANG_SECONDS = 6.0


# --- health servers, each in its own process ------------------------------------------------


def _serve(queue, ports: int, first_port: int = 0) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = b'{"status": "healthy", "database": true, "cache": true, "dependencies": true}'

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without TCP_NODELAY every keep-alive
        # response waits ~40 ms on Nagle + delayed ACK, and the stub, not the code, is measured.
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.startswith("/hang/"):
                time.sleep(HANG_SECONDS)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

        def handle_error(self, request, client_address):
            pass  # clients that timed out on a hanging probe: expected

    servers = [Server(("127.0.0.1", first_port + i if first_port else 0), Handler) for i in range(ports)]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    queue.put([server.server_address[1] for server in servers])
    servers[0].serve_forever()


def start_servers(n: int, ports_each: int, base_port: int = 0) -> tuple[list, list[int]]:
    """``base_port``: bind ports base_port … base_port + n × ports_each - 1 (0: any free ports)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_serve, args=(queue, ports_each, base_port and base_port + k * ports_each),
                         daemon=True) for k in range(n)]
    for p in procs:
        p.start()
    ports = [port for _ in procs for port in queue.get(timeout=60)]
    return procs, ports


# --- setup / reset ------------------------------------------------------------------------


def _cleanup() -> None:
    from registry import alerts
    from registry.models import Alert, BreakerEvent, Service, StatusChange

    alerts.alerts_flush()
    Alert.objects.filter(service__type=BENCH_TYPE).delete()
    BreakerEvent.objects.filter(service__type=BENCH_TYPE).delete()
    StatusChange.objects.filter(service_type=BENCH_TYPE).delete()
    Service.objects.filter(type=BENCH_TYPE).delete()


def _vacuum() -> None:
    """Compact tables left by earlier runs (autovacuum is off on some machines, this one included)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) registry_service, registry_healthsnapshot, registry_statuschange")


def _reset_round() -> None:
    """Every bench service due and unknown again, breakers closed."""
    import redis
    from django.conf import settings

    from registry import alerts
    from registry.models import HealthSnapshot, Service, StatusChange

    alerts.alerts_flush()
    HealthSnapshot.objects.filter(service__type=BENCH_TYPE).delete()
    StatusChange.objects.filter(service_type=BENCH_TYPE).delete()
    Service.objects.filter(type=BENCH_TYPE).update(
        status="unknown", status_reason="", next_check_at=None, last_checked_at=None,
        consecutive_failures=0, consecutive_successes=0, critical_since=None,
    )
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{settings.BREAKER_REDIS_PREFIX}:*"):
        client.delete(key)


def _create(urls: list[str], *, timeout: float) -> None:
    from registry.models import Service

    Service.objects.bulk_create(
        [Service(name=f"bench-{i}", type=BENCH_TYPE, url=url.rsplit("/", 2)[0], health_url=url,
                 check_timeout_seconds=timeout, check_interval_seconds=3600)
         for i, url in enumerate(urls)],
        batch_size=2000,
    )


# --- measurements --------------------------------------------------------------------------------


def measure_sweep() -> float:
    from registry import health_loop

    _reset_round()
    started = time.perf_counter()
    report = health_loop.health_sweep_run()
    elapsed = time.perf_counter() - started
    assert report.probed == report.claimed, report
    return elapsed


def measure_steady_sweep() -> float:
    """A sweep of services already passing (due again, nothing else reset): no status changes,
    so no transitions, no registry-index bumps, no StatusChange rows; claims, probes, result
    updates and snapshots as in every sweep."""
    from registry import health_loop
    from registry.models import Service

    Service.objects.filter(type=BENCH_TYPE).update(next_check_at=None)
    started = time.perf_counter()
    report = health_loop.health_sweep_run()
    elapsed = time.perf_counter() - started
    assert report.probed == report.claimed and not report.changes, report
    return elapsed


def measure_baseline(urls: list[str], *, in_flight: int, timeout: float) -> float:
    """A bare aiohttp loop: the same GETs, no policy, no limits per destination, no database."""
    import asyncio

    import aiohttp

    async def main() -> float:
        connector = aiohttp.TCPConnector(limit=in_flight)
        async with aiohttp.ClientSession(connector=connector) as session:
            gate = asyncio.Semaphore(in_flight)

            async def one(url: str) -> int:
                async with gate:
                    try:
                        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                            await r.read()
                            return r.status
                    except (TimeoutError, aiohttp.ClientError):
                        return 0

            started = time.perf_counter()
            await asyncio.gather(*(one(u) for u in urls))
            return time.perf_counter() - started

    return asyncio.run(main())


def measure_prober(urls: list[str], *, timeout: float) -> float:
    """The sweep's prober alone (policy, limits, aiohttp; no claiming, no database)."""
    import queue as queue_mod

    from django.conf import settings

    from registry import prober

    gate = prober.Gate(max_in_flight=settings.HEALTH_SWEEP_MAX_IN_FLIGHT,
                       concurrency=settings.HEALTH_SWEEP_CONCURRENCY,
                       slow_after=settings.HEALTH_SWEEP_SLOW_AFTER_SECONDS)
    done: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
    started = time.perf_counter()
    prober.prober().submit(urls, url_of=lambda u: u, timeout_of=lambda u: timeout,
                           done=lambda job, response, error, seconds: done.put(error), gate=gate)
    for _ in urls:
        done.get()
    return time.perf_counter() - started


def measure_check_health() -> tuple[float, float]:
    """(check_health --all wall time, Django start-up: `manage.py check`), as subprocesses."""
    import subprocess

    _reset_round()
    env = dict(os.environ, DEBUG="0", LOG_LEVEL="WARNING", BREAKER_REDIS_PREFIX="bench:breaker")

    def timed(*cmd: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "manage.py", *cmd], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started

    return timed("check_health", "--all"), timed("check")


def scenario_a(args, ports) -> list[tuple]:
    """1,000 services, 10 % hanging past a 2 s timeout; then check_health --all over them."""
    from django.conf import settings

    n = args.hang_services
    urls = [f"http://127.0.0.1:{ports[i % len(ports)]}/{'hang' if i % 10 == 0 else 'ok'}/{i}" for i in range(n)]
    _create(urls, timeout=2.0)
    wide = settings.HEALTH_SWEEP_MAX_IN_FLIGHT
    sweep, base, command, startup = [], [], [], []
    for _ in range(args.repeats):  # interleaved so both see the same machine load
        sweep.append(measure_sweep())
        base.append(measure_baseline(urls, in_flight=wide, timeout=2.0))
        if "C" in args.only:
            total, start = measure_check_health()
            command.append(total - start)
            startup.append(start)
    a = statistics.median(sweep)
    rows = [
        (f"A: sweep, {n} svc, 10% hang (2 s timeout)", "s", a, "≤ 3.5", "ok" if a <= 3.5 else "MISS"),
        (f"A: baseline, bare aiohttp, {wide} in flight", "s", statistics.median(base), "", ""),
    ]
    if command:
        c = statistics.median(command)
        rows += [
            ("C: check_health --all minus Django start-up", "s", c, "≤ 3.5", "ok" if c <= 3.5 else "MISS"),
            ("C: Django start-up (manage.py check)", "s", statistics.median(startup), "", ""),
        ]
    return rows


def scenario_b(args, ports) -> list[tuple]:
    """10,000 healthy services; the sweep against a bare thread-pool loop."""
    n = args.services
    urls = [f"http://127.0.0.1:{ports[i % len(ports)]}/ok/{i}" for i in range(n)]
    _create(urls, timeout=5.0)
    sweep, base, alone, steady = [], [], [], []
    for _ in range(args.repeats):  # interleaved so both see the same machine load
        sweep.append(measure_sweep())
        base.append(measure_baseline(urls, in_flight=args.baseline_in_flight, timeout=5.0))
        alone.append(measure_prober(urls, timeout=5.0))
        steady.append(measure_steady_sweep())  # right after measure_sweep's round: all passing
    b, bb, pa = statistics.median(sweep), statistics.median(base), statistics.median(alone)
    st = statistics.median(steady)
    ratio = bb / b
    return [
        (f"B: sweep, {n} healthy svc, with DB writes", "s", b, "≤ 20", "ok" if b <= 20 else "MISS"),
        (f"B: baseline, bare aiohttp, {args.baseline_in_flight} in flight", "s", bb, "", ""),
        ("B: sweep throughput", "probes/s", n / b, "", ""),
        ("B: baseline throughput", "probes/s", n / bb, "", ""),
        ("B: sweep / baseline throughput", "ratio", ratio, "≥ 0.7", "ok" if ratio >= 0.7 else "MISS"),
        ("B: prober alone (no database)", "s", pa, "", ""),
        ("B: prober alone / baseline throughput", "ratio", bb / pa, "", ""),
        ("B: steady sweep (all passing already)", "s", st, "", ""),
        ("B: steady sweep / baseline throughput", "ratio", bb / st, "", ""),
    ]


def _bench_rows(services, *, now):
    from datetime import timedelta

    from registry.health_results import Row, SnapshotValues

    return [
        Row(svc, svc.status, "passing", "", 0, 1, now, now + timedelta(hours=1), 1.5,
            SnapshotValues(checked_at=now, status="passing", http_status=200, latency_ms=1.5, error="",
                           details={"status": "healthy", "database": True}),
            "passing")
        for svc in services
    ]


def scenario_w(args) -> list[tuple]:
    """Each PostgreSQL-specific statement of the health code against its ORM twin, on B's
    services (no HTTP): claims of 500, and groups of 1,000 results (the writer's group)."""
    from datetime import timedelta

    from django.db import transaction
    from django.db.models import F
    from django.utils import timezone

    from registry import health_loop, health_results
    from registry.models import Service

    n, group = args.services, 1000
    if not Service.objects.filter(type=BENCH_TYPE).exists():
        _create([f"http://127.0.0.1:9/ok/{i}" for i in range(n)], timeout=5.0)
    bench = Service.objects.filter(type=BENCH_TYPE)

    def claim_all(fn) -> float:
        """Claim every bench service in batches of 500, in the sweep's order."""
        bench.update(next_check_at=None)
        qs = bench.filter(health_loop.probed(), next_check_at__isnull=True).order_by(
            F("next_check_at").asc(nulls_first=True), "id")
        started = time.perf_counter()
        while fn(qs, batch_size=500, until=timezone.now() + timedelta(seconds=300)):
            pass
        return time.perf_counter() - started

    def per_group(fn, *, values: bool = False) -> float:
        """fn over every group of 1,000, each in a transaction rolled back (statements only)."""
        services = list(bench.order_by("id"))
        spent = 0.0
        for i in range(0, len(services), group):
            rows = _bench_rows(services[i:i + group], now=timezone.now())
            arg = ([(r.service.pk, s.checked_at, s.status, s.http_status, s.latency_ms, s.error, s.details)
                    for r in rows if (s := r.snapshot)] if values else rows)
            with transaction.atomic():
                started = time.perf_counter()
                fn(arg)
                spent += time.perf_counter() - started
                transaction.set_rollback(True)
        return spent

    pairs = {
        "claim (UPDATE … RETURNING vs 3 ORM statements)":
            (lambda: claim_all(health_loop._claim_postgres), lambda: claim_all(health_loop._claim_orm)),
        "service update (unnest vs one guarded update per service)":
            (lambda: per_group(health_results._update_services_unnest),
             lambda: per_group(health_results._update_services_orm)),
        "snapshots (COPY vs bulk_create)":
            (lambda: per_group(health_results._insert_snapshots_copy, values=True),
             lambda: per_group(health_results._insert_snapshots_orm, values=True)),
    }
    rows = []
    for name, (pg, orm) in pairs.items():
        a, b = [], []
        for _ in range(args.repeats):  # interleaved: both see the same machine
            a.append(pg())
            b.append(orm())
        ma, mb = statistics.median(a), statistics.median(b)
        rows += [(f"W: {name}: PostgreSQL", "s", ma, "", ""),
                 (f"W: {name}: ORM", "s", mb, "", f"{mb / ma:.2f}×")]
    bench.update(next_check_at=None)
    return rows


def run(args) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.BREAKER_REDIS_PREFIX = "bench:breaker"
    settings.ALERT_WEBHOOK_URLS = []
    settings.ADMINS = []
    if not settings.REDIS_URL or "postgres" not in settings.DATABASES["default"]["ENGINE"]:
        sys.exit("Set DATABASE_URL (PostgreSQL) and REDIS_URL to your own database / Redis db.")
    call_command("migrate", verbosity=0)
    procs, ports = start_servers(args.servers, args.ports, args.base_port)
    rows: list[tuple[str, str, float, str, str]] = []
    try:
        _cleanup()
        _vacuum()
        if "A" in args.only:
            rows += scenario_a(args, ports)
            _cleanup()
        if "B" in args.only:
            rows += scenario_b(args, ports)
        if "W" in args.only:
            rows += scenario_w(args)
    finally:
        _cleanup()
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(5)

    _print(args, rows)


def _print(args, rows) -> None:
    print(f"\nHealth sweep benchmark — median of {args.repeats} runs, {args.servers} server processes "
          f"× {args.ports} ports, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'measure':<48} {'unit':<9} {'value':>9}  {'target':<7} result")
    print("-" * 84)
    for name, unit, value, target, result in rows:
        print(f"{name:<48} {unit:<9} {value:>9.2f}  {target:<7} {result}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--hang-services", type=int, default=1_000)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--ports", type=int, default=50, help="ports per server process")
    parser.add_argument("--base-port", type=int, default=0,
                        help="bind the servers' ports from here up (0: any free ports)")
    parser.add_argument("--baseline-in-flight", type=int, default=64)
    parser.add_argument("--only", default="ABC",
                        help="scenarios to run: any of A, B, C (C needs A), W (write paths, not by default)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
