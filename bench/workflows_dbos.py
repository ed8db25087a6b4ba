"""DBOS Transact as the second baseline of ``bench/workflows.py`` (not a test; not the portal).

DBOS checkpoints every step of a workflow in PostgreSQL, as the engine does; it runs
the workflow's steps in threads of the process that dequeued it (no broker). The same
7 POSTs to the same stub, as DBOS steps, on the same PostgreSQL database (schema
``dbos``). Installed only in the bench's environment: ``pip install -e '.[bench]'``.

Run as a worker by the bench (``python -m bench.workflows_dbos <system database url>``):
two such processes, each running one workflow at a time (``worker_concurrency=1``),
match the engine's worker (prefork, 2 processes, one step each). DBOS queues are polled:
``polling_interval_sec`` is 0.01 s (the default, 1 s, would measure the poll, not DBOS).
"""

from __future__ import annotations

import sys
import threading
import time

import requests
from dbos import DBOS, DBOSConfig

QUEUE = "bench_dbos_seven"
STEPS = 7
APP = "berrys-bench"
_session = threading.local()


@DBOS.step()
def bench_dbos_post(url: str, i: int) -> float:
    session = getattr(_session, "s", None) or requests.Session()
    _session.s = session
    started = time.perf_counter()
    session.post(f"{url}/step/{i}", json={"i": i}, timeout=5).raise_for_status()
    return (time.perf_counter() - started) * 1000


@DBOS.workflow(name="bench_dbos_seven")
def bench_dbos_seven(url: str) -> tuple[float, float]:
    """Seven POSTs; returns (wall clock at the end, HTTP ms) for the overhead figure."""
    http_ms = 0.0
    for i in range(STEPS):
        http_ms += bench_dbos_post(url, i)
    return time.time(), http_ms


def main(system_database_url: str) -> None:
    config: DBOSConfig = {"name": APP, "system_database_url": system_database_url, "log_level": "WARNING",
                          "application_version": "bench"}
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue(QUEUE, worker_concurrency=1, polling_interval_sec=0.01, on_conflict="always_update")
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1])
