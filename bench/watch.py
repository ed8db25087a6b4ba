"""Benchmark of blocking watches on the ASGI watch server (not a test).

    .venv/bin/python -m bench.watch [--watchers 1000] [--rounds 5] [--seconds 8] [--repeats 2]

What it does: creates its own PostgreSQL database (``<name>_bench``, dropped at the
end), seeds it like bench/registry.py (1,000 services of 50 types), starts the
regular server (gunicorn, 2 sync workers) and the watch server (uvicorn,
berrys_portal.asgi_watch), then:

1. ``discovery`` alone: GET /discovery/{type} on gunicorn (bench/registry.py's load:
   32 keep-alive connections over 4 processes) for N seconds — the baseline;
2. opens ``--watchers`` blocking watches on the watch server, all on TYPE_00 (the
   worst case: one change wakes every one of them), half ``/v1/health/service/TYPE_00``,
   half ``/discovery/TYPE_00?all=1``, from a separate process (aiohttp, one connection
   each); reports the watch server's RSS and threads before and with them open;
3. ``discovery`` again while they are open (no change meanwhile: the watchers wait);
4. ``--rounds`` times: changes TYPE_00's first service (passing <-> warning) in one
   committed UPDATE and records, for each watcher, the time from that commit to its
   answer arriving; each watcher then re-watches with the new index. The watch server's
   CPU seconds from the change until it is quiet again (the answers and the re-opens),
   and during each discovery run with the watches open, are reported too.

How the watchers behave: by default each round's watchers re-open only once all of them
have their answer (the re-opens then never overlap the answers); ``--reopen-at-once``
re-opens each as soon as it has its own, as a real client does (the re-opens then reach
the watch server while it is still answering). ``--client raw`` uses the lean asyncio
client of ``bench/watch_client.py`` instead of aiohttp (0.03 s of CPU per change instead
of 0.13-0.15 s with ``--reopen-at-once``, on the cores the server runs on). Also reported:
the watcher process's CPU per change, the watch server's CPU until the last
answer arrived, and each change's first and last wake-up. ``--watch-workers N`` runs
uvicorn with N worker processes (each with its own feed; CPU, RSS and threads summed).

Baseline and "with watchers" discovery runs are interleaved ``--repeats`` times; the
ratio is the median of per-repeat ratios. Targets: wake-up p99 <= 200 ms;
discovery with the watchers open within 10 % of the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench import watch_client
from bench.registry import N_TYPES, _admin_sql, _free_port, _wait_ready, run_load

ROOT = Path(__file__).resolve().parents[1]
WATCHED_TYPE = "TYPE_00"


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn's worker processes under ``--watch-workers``)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(parents.get(current, ()))
    return pids


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS (KiB) and Threads, summed over the process and its descendants."""
    out = {"VmRSS": 0, "Threads": 0}
    for one in _tree(pid):
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "Threads:")):
                name, value = line.split(":", 1)
                out[name] += int(value.split()[0])
    return out


# --- the watchers (a separate process) ----------------------------------------------------


def _watchers(port: int, key: str, n: int, rounds: int, spread: bool, at_once: bool,  # noqa: PLR0913
              to_main, from_main) -> None:
    """Watcher i watches TYPE_00 (all on one type) or TYPE_{i mod 50} (spread); only TYPE_00 changes.

    Each round reports when TYPE_00's watchers got their answers, then re-watches them
    with the new index (``at_once``: each as soon as it has its own answer, so the
    re-opens reach the server while it is still answering the others); the other types'
    watchers stay open, waiting, throughout.
    """
    import aiohttp

    async def run() -> None:
        base = f"http://127.0.0.1:{port}"
        headers = {"X-Consul-Token": key, "Authorization": f"Token {key}"}
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=900)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(i: int, service_type: str, index: int) -> tuple[float, int, int]:
                if i % 2:
                    path, params = f"/v1/health/service/{service_type}", {}
                else:
                    path, params = f"/discovery/{service_type}", {"all": "1"}
                params.update(index=str(index), wait="10m")
                async with session.get(base + path, params=params, headers=headers) as response:
                    await response.read()
                    arrived = time.time()
                    header = response.headers.get("X-Consul-Index") or response.headers.get("X-Registry-Index")
                    return arrived, response.status, int(header or 0)

            types = [WATCHED_TYPE if not spread else f"TYPE_{i % N_TYPES:02d}" for i in range(n)]
            indexes = {}
            for service_type in sorted(set(types)):
                async with session.get(base + f"/v1/health/service/{service_type}", headers=headers) as first:
                    indexes[service_type] = int(first.headers["X-Consul-Index"])
            others = [asyncio.create_task(one(i, t, indexes[t])) for i, t in enumerate(types) if t != WATCHED_TYPE]
            mine = [i for i, t in enumerate(types) if t == WATCHED_TYPE]
            index = indexes[WATCHED_TYPE]

            def early() -> int:  # watchers of other types that answered: none should
                return sum(1 for t in others if t.done())

            if at_once:  # each watcher re-watches as soon as it has its answer, as a real client does
                answers: list[list[tuple[float, int, int]]] = [[] for _ in range(rounds + 1)]
                complete = [asyncio.Event() for _ in range(rounds + 1)]

                async def follow(i: int) -> None:
                    at = index
                    for r in range(rounds + 1):
                        result = await one(i, WATCHED_TYPE, at)
                        answers[r].append(result)
                        if len(answers[r]) == len(mine):
                            complete[r].set()
                        at = result[2]

                followers = [asyncio.create_task(follow(i)) for i in mine]
                for r in range(rounds + 1):
                    async def arrived(r: int = r) -> list:
                        await complete[r].wait()
                        return answers[r]

                    await watch_client.one_round(to_main, from_main, opened=len(followers), arrived=arrived,
                                                 early=early)
                await asyncio.gather(*followers)
            for _ in range(rounds + 1 if not at_once else 0):
                tasks = [asyncio.create_task(one(i, WATCHED_TYPE, index)) for i in mine]
                results = await watch_client.one_round(to_main, from_main, opened=len(tasks),
                                                       arrived=lambda tasks=tasks: asyncio.gather(*tasks), early=early)
                index = max(i for _, _, i in results)
            for task in others:
                task.cancel()

    asyncio.run(run())


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) the process and its descendants have used."""
    total = 0
    for one in _tree(pid):
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _quiet(pid: int, *, below: float = 0.05, timeout: float = 120) -> None:
    """Wait until the process uses less than ``below`` of a core (the watches are all open and idle)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        before = _cpu(pid)
        time.sleep(0.5)
        if (_cpu(pid) - before) / 0.5 < below:
            return


# --- changes ----------------------------------------------------------------------------


def _change(db_url: str, flip: int) -> float:
    """Flip TYPE_00's first service between passing and warning; the time of the commit."""
    import psycopg

    status = "warning" if flip % 2 == 0 else "passing"
    with psycopg.connect(db_url.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute("UPDATE registry_service SET status = %s WHERE id = "
                     "(SELECT min(id) FROM registry_service WHERE type = %s)", [status, WATCHED_TYPE])
        return time.time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reopen-at-once", action="store_true",
                        help="each watcher re-watches as soon as it has its answer (default: once all have theirs)")
    parser.add_argument("--client", choices=["aiohttp", "raw"], default="aiohttp",
                        help="the watchers' HTTP client: aiohttp, or bench/watch_client.py's lean protocol")
    parser.add_argument("--watch-workers", type=int, default=1,
                        help="uvicorn worker processes of the watch server (each with its own index feed)")
    parser.add_argument("--port", type=int, default=0,
                        help="gunicorn's port; the watch server takes the next one (default: free ones)")
    parser.add_argument("--all-on-one-type", action="store_true",
                        help="every watcher on TYPE_00 (one change wakes them all) instead of spread over 50 types")
    args = parser.parse_args()

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_watch")
    parts = urlsplit(base)
    db_name = parts.path.lstrip("/") + "_bench"
    db_url = parts._replace(path=f"/{db_name}").geturl()
    env = dict(
        os.environ, DATABASE_URL=db_url, REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/1"),
        DJANGO_SETTINGS_MODULE="bench.settings_bench", DJANGO_ENV="development", DEBUG="0", CONN_MAX_AGE="60",
        API_WRITE_THROTTLE_RATE="100000000/min", PYTHONPATH=str(ROOT),
        WATCH_MAX_PER_KEY=str(max(256, args.watchers)),  # every watcher uses the one bench key
    )
    _admin_sql(base, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)', f'CREATE DATABASE "{db_name}"')
    servers: list[subprocess.Popen] = []
    watcher_proc = None
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        seeded = subprocess.run([sys.executable, "-m", "bench.registry", "--seed"], cwd=ROOT, env=env, check=True,
                                capture_output=True, text=True)
        data = json.loads(seeded.stdout.strip().splitlines()[-1])
        web_port, watch_port = (args.port, args.port + 1) if args.port else (_free_port(), _free_port())
        bin_dir = Path(sys.executable).parent
        servers.append(subprocess.Popen(
            [str(bin_dir / "gunicorn"), "berrys_portal.wsgi:application", "--workers", str(args.workers),
             "--worker-class", "sync", "--bind", f"127.0.0.1:{web_port}", "--backlog", "2048",
             "--log-level", "warning"], cwd=ROOT, env=env, start_new_session=True))
        watch_env = dict(env, DJANGO_SETTINGS_MODULE="berrys_portal.settings_watch")
        servers.append(subprocess.Popen(
            [str(bin_dir / "uvicorn"), "berrys_portal.asgi_watch:application", "--host", "127.0.0.1",
             "--port", str(watch_port), "--no-access-log", "--log-level", "warning", "--backlog", "4096",
             *(["--workers", str(args.watch_workers)] if args.watch_workers > 1 else [])],
            cwd=ROOT, env=watch_env, start_new_session=True))
        _wait_ready(web_port, servers[0])
        _wait_ready(watch_port, servers[1])
        watch_pid = servers[1].pid

        def discovery(seconds: float) -> dict:
            return run_load(port=web_port, scenario="discovery", key=data["key"], ids=data["ids"], seconds=seconds,
                            connections=args.connections, processes=args.processes)

        discovery(2)  # warm-up
        baseline = [discovery(args.seconds)]
        idle = _proc_status(watch_pid)

        ctx = mp.get_context("fork")
        to_main, from_main = ctx.Queue(), ctx.Queue()
        if args.client == "raw":
            types = [WATCHED_TYPE if args.all_on_one_type else f"TYPE_{i % N_TYPES:02d}" for i in range(args.watchers)]
            watcher_proc = ctx.Process(target=watch_client.run,
                                       args=(watch_port, data["key"], types, WATCHED_TYPE, args.rounds,
                                             args.reopen_at_once, to_main, from_main))
        else:
            watcher_proc = ctx.Process(target=_watchers,
                                       args=(watch_port, data["key"], args.watchers, args.rounds,
                                             not args.all_on_one_type, args.reopen_at_once, to_main, from_main))
        watcher_proc.start()
        kind, _ = to_main.get(timeout=120)
        _quiet(watch_pid)
        loaded = _proc_status(watch_pid)
        idle_cpu: list[float] = []  # the watch server's CPU seconds during each discovery run

        def discovery_with_watchers() -> dict:
            before = _cpu(watch_pid)
            result = discovery(args.seconds)
            idle_cpu.append(_cpu(watch_pid) - before)
            return result

        with_watchers = [discovery_with_watchers()]  # the watchers are open (and idle) meanwhile
        change_cpu: list[float] = []  # per change: waking the watchers, answering, and their re-opening

        wakeups: list[float] = []
        answered_cpu: list[float] = []  # per change: the watch server's CPU until the last answer arrived
        per_change: list[tuple[float, float]] = []  # per change: first and last wake-up
        client_cpu: list[float] = []  # per change: the watcher process's CPU until its last answer
        statuses: set[int] = set()
        woken_others = 0
        for flip in range(args.rounds + 1):
            before = _cpu(watch_pid)
            changed_at = _change(db_url, flip)
            from_main.put("changed")
            _, arrived, round_statuses, early, cpu = to_main.get(timeout=120)
            answered_cpu.append(_cpu(watch_pid) - before)  # the re-opens may have begun: about
            client_cpu.append(cpu)
            per_change.append((min(arrived) - changed_at, max(arrived) - changed_at))
            statuses.update(round_statuses)
            woken_others = max(woken_others, early)
            wakeups.extend(a - changed_at for a in arrived)
            if flip < args.rounds:
                kind, _ = to_main.get(timeout=120)  # re-opened with the new index
                _quiet(watch_pid)
                change_cpu.append(_cpu(watch_pid) - before)
                if len(with_watchers) < args.repeats:
                    with_watchers.append(discovery_with_watchers())
        watcher_proc.join(30)
        while len(baseline) < len(with_watchers):  # the watchers are closed now
            baseline.append(discovery(args.seconds))
        _print(args, baseline, with_watchers, wakeups, statuses, idle, loaded, woken_others, idle_cpu, change_cpu,
               client_cpu, answered_cpu, per_change)
    finally:
        if watcher_proc is not None and watcher_proc.is_alive():
            watcher_proc.kill()
        for proc in servers:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        _admin_sql(base, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def _print(args, baseline, with_watchers, wakeups, statuses, idle, loaded, woken_others,  # noqa: PLR0913
           idle_cpu, change_cpu, client_cpu, answered_cpu, per_change) -> None:
    wakeups.sort()
    p = lambda q: wakeups[min(len(wakeups) - 1, int(len(wakeups) * q))] * 1000  # noqa: E731
    ratios = [w["rps"] / b["rps"] for w, b in zip(with_watchers, baseline, strict=True) if b["rps"]]
    ratio = statistics.median(ratios)
    rss_per_watch = (loaded["VmRSS"] - idle["VmRSS"]) / args.watchers
    layout = "all on TYPE_00" if args.all_on_one_type else f"spread over {N_TYPES} types"
    woken = len(wakeups) // (args.rounds + 1)
    print(f"\nWatch bench: {args.watchers} open watches, {layout} (half /v1/health/service, half "
          f"/discovery?all=1, {args.client} client{', re-open at once' if args.reopen_at_once else ''}), "
          f"uvicorn {args.watch_workers} process(es); each change to TYPE_00 wakes its {woken}; "
          f"discovery on gunicorn {args.workers} sync workers, {args.connections} connections, "
          f"{args.seconds:g} s x {args.repeats}\n")
    print("| figure | value | target |")
    print("|---|---|---|")
    print(f"| wake-up after a change, p50 | {p(0.5):.0f} ms | |")
    print(f"| wake-up after a change, p99 ({len(wakeups)} wake-ups, {args.rounds + 1} changes) | {p(0.99):.0f} ms "
          f"| <= 200 ms {'ok' if p(0.99) <= 200 else 'MISS'} |")
    print(f"| wake-up, max | {wakeups[-1] * 1000:.0f} ms | |")
    print(f"| answers | {sorted(statuses)} | all 200 |")
    print(f"| watches of other types woken by the changes | {woken_others} | 0 |")
    print(f"| watch server RSS idle -> {args.watchers} open | {idle['VmRSS'] / 1024:.1f} -> "
          f"{loaded['VmRSS'] / 1024:.1f} MiB ({rss_per_watch:.1f} KiB per watch) | |")
    print(f"| watch server threads idle -> {args.watchers} open | {idle['Threads']} -> {loaded['Threads']} | "
          f"not one per watch |")
    print(f"| watch server CPU per change (wake-up, answers, re-opens; median of {len(change_cpu)}) | "
          f"{statistics.median(change_cpu) if change_cpu else float('nan'):.2f} s | |")
    print(f"| watch server CPU from the change to the last answer's arrival (median of {len(answered_cpu)}) | "
          f"{statistics.median(answered_cpu):.2f} s | |")
    print(f"| watcher process (the bench's client) CPU from the change to its last answer (median of "
          f"{len(client_cpu)}) | {statistics.median(client_cpu):.2f} s | |")
    print(f"| last wake-up of a change, median of {len(per_change)} changes | "
          f"{statistics.median(b for _, b in per_change) * 1000:.0f} ms | |")
    print("| first / last wake-up of each change | "
          f"{', '.join(f'{a * 1000:.0f}/{b * 1000:.0f}' for a, b in per_change)} ms | |")
    print(f"| watch server CPU while discovery ran with the watches open (median of {len(idle_cpu)}) | "
          f"{statistics.median(idle_cpu):.2f} s per {args.seconds:g} s run | |")
    print(f"| discovery req/s, baseline (median) | {statistics.median(b['rps'] for b in baseline):.0f} | |")
    print(f"| discovery req/s, {args.watchers} watches open (median) | "
          f"{statistics.median(w['rps'] for w in with_watchers):.0f} | |")
    print(f"| discovery with watches open vs baseline (median of paired ratios) | {ratio:.0%} | "
          f">= 90 % {'ok' if ratio >= 0.9 else 'MISS'} |")


if __name__ == "__main__":
    main()
