"""Benchmark: what one health GET costs each HTTP client (not a test; prints a table).

Why the sweep's prober is not requests (registry/prober.py): the same keep-alive GETs
against the health bench's loopback servers, through

* requests ``Session.get`` on a pool of 64 threads (the health issue's baseline),
* ``http.client`` connections on 64 threads,
* a bare aiohttp loop (64 at a time),
* the portal's prober: aiohttp under the egress policy, with per-destination limits (64 at a time),

reporting GETs per second and the client process's CPU per GET, median of ``--repeats``.

    .venv/bin/python bench/probe_clients.py [--gets 4000] [--servers 4] [--ports 50] [--repeats 3]

The URLs are spread over ``--servers`` processes × ``--ports`` ports: the prober limits
each destination (address and port) to 20 probes started per second, as it must against a
hostile registrant.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_local = threading.local()


def _requests_get(url: str) -> int:
    import requests

    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session.get(url, timeout=5).status_code


def _http_client_get(url: str) -> int:
    conns = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    hostport, path = url.split("/", 3)[2], "/" + url.split("/", 3)[3]
    conn = conns.get(hostport)
    if conn is None:
        host, port = hostport.split(":")
        conn = conns[hostport] = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status


def _pool(fn, urls: list[str]) -> None:
    with ThreadPoolExecutor(64) as pool:
        list(pool.map(fn, urls))


def _prober(urls: list[str]) -> None:
    from registry import prober

    p = prober.prober()
    done = threading.Event()
    left = [len(urls)]
    lock = threading.Lock()

    def finished(job, response, error, seconds):
        with lock:
            left[0] -= 1
            if not left[0]:
                done.set()

    gate = prober.Gate(max_in_flight=64, concurrency=64, slow_after=10)
    p.submit(urls, url_of=lambda u: u, timeout_of=lambda u: 5.0, done=finished, gate=gate)
    done.wait(120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gets", type=int, default=4000)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ports", type=int, default=50)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
    import django

    django.setup()  # the prober reads its limits from the settings
    from bench.health import measure_baseline, start_servers

    procs, ports = start_servers(args.servers, args.ports)
    urls = [f"http://127.0.0.1:{ports[i % len(ports)]}/ok/{i}" for i in range(args.gets)]
    clients = [
        ("requests Session, 64 threads", lambda u: _pool(_requests_get, u)),
        ("http.client, 64 threads", lambda u: _pool(_http_client_get, u)),
        ("aiohttp bare, 64 at a time", lambda u: measure_baseline(u, in_flight=64, timeout=5.0)),
        ("portal prober, 64 at a time", _prober),
    ]
    rates: dict[str, list[float]] = {name: [] for name, _ in clients}
    cpus: dict[str, list[float]] = {name: [] for name, _ in clients}
    try:
        for _name, run in clients:
            run(urls[:200])  # warm-up: connections, imports
        for _ in range(args.repeats):  # interleaved, so all see the same machine
            for name, run in clients:
                wall, cpu = time.perf_counter(), time.process_time()
                run(urls)
                rates[name].append(len(urls) / (time.perf_counter() - wall))
                cpus[name].append((time.process_time() - cpu) * 1e6 / len(urls))
    finally:
        for p in procs:
            p.terminate()
    base = statistics.median(rates[clients[0][0]])
    print(f"\nHealth GET cost by client — {args.gets} keep-alive GETs, {args.servers} server processes, "
          f"median of {args.repeats}, {os.cpu_count()} CPUs")
    print(f"{'client':<32} {'GET/s':>8} {'client CPU µs/GET':>18} {'vs requests':>12}")
    print("-" * 74)
    for name, _ in clients:
        rate = statistics.median(rates[name])
        print(f"{name:<32} {rate:>8.0f} {statistics.median(cpus[name]):>18.0f} {rate / base:>11.2f}x")


if __name__ == "__main__":
    main()  # spawned server processes re-import this module: keep the work under the guard
