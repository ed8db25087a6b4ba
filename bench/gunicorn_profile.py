"""gunicorn config for ``bench.registry --profile DIR``: cProfile each worker, dump at exit.

Each worker process profiles itself from fork to exit and writes ``DIR/worker-<pid>.prof``
(read with ``python -m pstats`` or ``bench.registry --profile-report DIR``). The profile
covers every request the worker served, warm-up included, in wall-clock time (cProfile's
default): waits on PostgreSQL and Redis show, which CPU time would hide. Under the shared
machine's load the rate limit's ``EVALSHA`` took ~4 ms of wall time per write this way,
time a sync worker cannot serve anything else.
"""

from __future__ import annotations

import cProfile
import os

_profiler: cProfile.Profile | None = None


def post_fork(server, worker) -> None:
    global _profiler
    _profiler = cProfile.Profile()
    _profiler.enable()


def worker_exit(server, worker) -> None:
    if _profiler is None:
        return
    _profiler.disable()
    out = os.environ["BENCH_PROFILE_DIR"]
    _profiler.dump_stats(os.path.join(out, f"worker-{os.getpid()}.prof"))
