"""Benchmark: what the gateway and the request adapters cost (not a test; prints a table).

Run from the repository root::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_gw_bench REDIS_URL=redis://127.0.0.1:6379/4 \\
        .venv/bin/python -m bench.gateway [--seconds 5] [--threads 8] [--repeats 3]

The database named in DATABASE_URL is dropped and re-created. Gunicorn with the
production configuration (berrys_portal/gunicorn_conf.py: 2 gthread workers) serves the
portal on PostgreSQL, with the egress policy and the caps of every gateway call in place
(address vetted and pinned, total deadline, body cap after decompression, no redirects).
The per-key / per-target concurrency bounds are raised to the client's thread count for the
run: with the defaults, one key driving 8 threads would be answered 503 + Retry-After by
design, and this measures what a call costs, not that bound. The simulated Tool Integration service
(a real process) answers ``GET /tools``. Three figures, each the median of
``--repeats`` runs:

* baseline: ``GET /tools`` straight to the simulator (keep-alive sessions, ``--threads`` threads);
* gateway: the same call through ``/gateway/TOOL_INTEGRATION/tools`` (API key, discovery,
  adapters, breaker, a second HTTP hop);
* adapters: ``adapt_request`` per call with 0 and with 20 matching rules (in-process, cached).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_gw_bench")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/4")

import psycopg  # noqa: E402
import requests  # noqa: E402

TI = "TOOL_INTEGRATION"


def _recreate_database(url: str) -> None:
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load(url: str, headers: dict, *, seconds: float, threads: int) -> dict:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    stop_at = time.perf_counter() + seconds

    def loop(i: int) -> None:
        session = requests.Session()
        session.headers.update(headers)
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            response = session.get(url, timeout=10)
            latencies[i].append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                errors[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    began = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    flat = sorted(x for part in latencies for x in part)
    return {
        "rps": len(flat) / elapsed,
        "p50": flat[len(flat) // 2],
        "p99": flat[min(len(flat) - 1, int(len(flat) * 0.99))],
        "errors": sum(errors),
    }


def _adapter_cost(rules: int, calls: int = 20000) -> float:
    """Microseconds per adapt_request call with ``rules`` matching rules (after the cache is warm)."""
    from registry.adapters import adapt_request, adapter_cache_clear
    from registry.models import RequestAdapterRule

    RequestAdapterRule.objects.filter(service_type="BENCH_TARGET").delete()
    RequestAdapterRule.objects.bulk_create([
        RequestAdapterRule(service_type="BENCH_TARGET", method="POST", endpoint_pattern="/things/*",
                           order=i, action="default", field=f"f{i}", value=i)
        for i in range(rules)
    ])
    adapter_cache_clear()
    body = {"name": "x", "status": "PLANNING", "metadata": {"a": 1}}
    adapt_request(service_type="BENCH_TARGET", method="POST", endpoint="/things/1", data=body)
    started = time.perf_counter()
    for _ in range(calls):
        adapt_request(service_type="BENCH_TARGET", method="POST", endpoint="/things/1", data=body)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker-class", default="gthread", help="gunicorn worker class (production: gthread)")
    args = parser.parse_args()

    _recreate_database(os.environ["DATABASE_URL"])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEBUG": "0", "LOG_LEVEL": "WARNING",
           "API_WRITE_THROTTLE_RATE": "1000000/min", "GATEWAY_MAX_CONCURRENT": str(args.threads),
           "GATEWAY_MAX_CONCURRENT_PER_KEY": str(args.threads),
           "GATEWAY_MAX_CONCURRENT_PER_TARGET": str(args.threads)}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)

    import django

    django.setup()
    from registry.auth import api_key_create
    from registry.models import HealthStatus, Service
    from simulators.process import SimulatorProcess

    sims = SimulatorProcess.start(only=[TI])
    Service.objects.create(name="tool-integration", type=TI, url=sims.urls[TI], status=HealthStatus.PASSING)
    _, key = api_key_create(name="bench", scopes=["gateway"], gateway_allow=[f"{TI}:GET"])
    port = _free_port()
    gunicorn = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "berrys_portal/gunicorn_conf.py",
         "berrys_portal.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "2", "--log-level", "warning",
         "--access-logfile", "/dev/null", "-k", args.worker_class],
        cwd=ROOT, env=env,
    )
    try:
        portal = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{portal}/health", timeout=2)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise SystemExit("gunicorn did not start") from None
                time.sleep(0.2)
        direct_url = f"{sims.urls[TI]}/tools?capability=web_search"
        gateway_url = f"{portal}/gateway/{TI}/tools?capability=web_search"
        auth = {"Authorization": f"Token {key}"}
        _load(gateway_url, auth, seconds=1, threads=2)  # warm-up: connections, caches
        results: dict[str, list[dict]] = {"direct": [], "gateway": []}
        for _ in range(args.repeats):
            results["direct"].append(_load(direct_url, {}, seconds=args.seconds, threads=args.threads))
            results["gateway"].append(_load(gateway_url, auth, seconds=args.seconds, threads=args.threads))
        adapters = {n: statistics.median(_adapter_cost(n) for _ in range(args.repeats)) for n in (0, 20)}
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=20)
        sims.stop()

    def med(name: str, field: str) -> float:
        return statistics.median(r[field] for r in results[name])

    print(f"\nGateway vs direct call ({args.threads} threads, {args.seconds:.0f} s, median of {args.repeats}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"{'path':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'req/s ratio':>13}")
    for name, label in (("direct", "direct to the simulator"), ("gateway", "through /gateway")):
        ratio = med(name, "rps") / med("direct", "rps")
        errors = sum(r["errors"] for r in results[name])
        print(f"{label:<28}{med(name, 'rps'):>10.0f}{med(name, 'p50'):>10.2f}{med(name, 'p99'):>10.2f}"
              f"{errors:>8}{ratio:>13.2f}")
    print(f"gateway overhead per call (p50): {med('gateway', 'p50') - med('direct', 'p50'):.2f} ms")
    print("\nadapt_request per call (in-process, rules cached)")
    print(f"{'matching rules':<28}{'µs/call':>10}")
    for n, us in adapters.items():
        print(f"{n:<28}{us:>10.1f}")


if __name__ == "__main__":
    main()
