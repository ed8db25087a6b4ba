"""Benchmark: retention pruning in batches against one unbounded DELETE (not a test; prints a table).

Run from the repository root on a database of your own (it is filled and emptied)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_retention_bench \\
        .venv/bin/python -m bench.retention [--runs 2000] [--snapshots 50000] [--repeats 3]

Each repeat writes ``--runs`` finished runs (3 steps, 2 attempts per step, 1 event: 11 rows a
run) and ``--snapshots`` health snapshots, all past retention, then deletes them twice over
(fresh rows each time): with ``retention_prune`` (RETENTION_BATCH_SIZE per transaction) and with
the unbounded ORM delete a naive prune would run (one transaction per table). The figure that
matters is the longest transaction: every row it deletes stays locked until it commits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from datetime import timedelta

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_retention_bench")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from berrys_portal import retention  # noqa: E402
from registry.models import HealthSnapshot, Service  # noqa: E402
from workflows.models import RunEvent, StepAttempt, StepRun, WorkflowRun  # noqa: E402


def fill(*, runs: int, snapshots: int) -> None:
    old = timezone.now() - timedelta(days=400)
    service, _ = Service.objects.get_or_create(name="bench", url="http://127.0.0.1:9", defaults={"type": "BENCH"})
    made = WorkflowRun.objects.bulk_create(
        [WorkflowRun(workflow="bench", version=1, status="succeeded", finished_at=old) for _ in range(runs)])
    steps = StepRun.objects.bulk_create(
        [StepRun(run=run, index=i, name=f"s{i}", status="succeeded") for run in made for i in range(3)])
    StepAttempt.objects.bulk_create(
        [StepAttempt(step=step, number=n, started_at=old, finished_at=old) for step in steps for n in (1, 2)],
        batch_size=5000)
    RunEvent.objects.bulk_create([RunEvent(run=run, kind="started", actor="bench") for run in made])
    HealthSnapshot.objects.bulk_create(
        [HealthSnapshot(service=service, checked_at=old, status="passing") for _ in range(snapshots)],
        batch_size=5000)


class Transactions:
    """Times every outermost transaction opened through ``transaction.atomic`` while installed."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._real = transaction.atomic
        self._depth = 0

    @contextlib.contextmanager
    def _timed(self, *args, **kwargs):
        start = time.perf_counter()
        self._depth += 1
        try:
            with self._real(*args, **kwargs):
                yield
        finally:
            self._depth -= 1
        if self._depth == 0:  # nested atomics (QuerySet.delete opens one) are part of the outer
            self.durations.append(time.perf_counter() - start)

    def __enter__(self) -> Transactions:
        transaction.atomic = self._timed
        return self

    def __exit__(self, *exc) -> None:
        transaction.atomic = self._real


def batched() -> tuple[float, float, int]:
    start = time.perf_counter()
    with Transactions() as tx:
        retention.retention_prune()
    return time.perf_counter() - start, max(tx.durations), len(tx.durations)


def unbounded() -> tuple[float, float, int]:
    cutoff = timezone.now() - timedelta(days=30)
    durations = []
    for queryset in (WorkflowRun.objects.filter(status="succeeded", finished_at__lt=cutoff),
                     HealthSnapshot.objects.filter(checked_at__lt=cutoff)):
        start = time.perf_counter()
        with transaction.atomic():
            queryset.delete()
        durations.append(time.perf_counter() - start)
    return sum(durations), max(durations), len(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--snapshots", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    results: dict[str, list[tuple[float, float, int]]] = {"unbounded (baseline)": [], "batched": []}
    for _ in range(args.repeats):
        for name, prune in (("unbounded (baseline)", unbounded), ("batched", batched)):
            fill(runs=args.runs, snapshots=args.snapshots)
            results[name].append(prune())
            assert not WorkflowRun.objects.exists() and not HealthSnapshot.objects.exists()
    rows = args.runs * 11 + args.snapshots
    print(f"{rows} rows ({args.runs} runs x 11 rows, {args.snapshots} snapshots), "
          f"RETENTION_BATCH_SIZE={settings.RETENTION_BATCH_SIZE}, medians of {args.repeats}")
    base_total = statistics.median(r[0] for r in results["unbounded (baseline)"])
    base_longest = statistics.median(r[1] for r in results["unbounded (baseline)"])
    print(f"{'':22} {'total s':>8} {'ratio':>6} {'longest tx ms':>14} {'ratio':>6} {'transactions':>12}")
    for name, samples in results.items():
        total = statistics.median(r[0] for r in samples)
        longest = statistics.median(r[1] for r in samples)
        print(f"{name:22} {total:8.2f} {total / base_total:6.2f} {longest * 1000:14.1f} "
              f"{longest / base_longest:6.3f} {samples[0][2]:12d}")


if __name__ == "__main__":
    main()
