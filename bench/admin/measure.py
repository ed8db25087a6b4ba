"""Server time and query count of the admin pages on the bench database (see generate.py).

    .venv/bin/python bench/admin/measure.py [--repeat 7]

In-process: Django's test Client (no network, no browser), logged in as a
superuser, each page fetched once to warm up then ``--repeat`` times; the table
shows the median and best wall time of the whole request (middleware, view,
queries, template) and the query count from CaptureQueriesContext. The baseline
is the admin's near-empty API-key list measured in the same run; "ratio" is a
page's median over the baseline's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", os.environ.get("BENCH_DATABASE_URL",
                                                     "postgres://postgres@127.0.0.1:5432/portal_bench_admin"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
os.environ.setdefault("DEBUG", "false")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from dashboard.queries import runs_chart_cache_clear  # noqa: E402
from registry.models import Service  # noqa: E402
from workflows.models import WorkflowRun  # noqa: E402

TARGET_MS = 300.0


def measure(client: Client, url: str, repeat: int, before=None) -> tuple[float, float, int, int]:
    response = client.get(url)  # warm-up (template and connection caches)
    assert response.status_code == 200, (url, response.status_code)
    times, queries = [], 0
    for _ in range(repeat):
        if before:
            before()
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(ctx)
    return statistics.median(times), min(times), queries, len(response.content)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)

    # Estimates, not COUNT(*): the point is that the pages never count the big tables either.
    with connection.cursor() as cur:
        cur.execute("SELECT relname, reltuples::bigint FROM pg_class WHERE relname = ANY(%s)",
                    [["workflows_workflowrun", "workflows_steprun", "registry_healthsnapshot"]])
        sizes = dict(cur.fetchall())
    failed = WorkflowRun.objects.filter(status="failed").order_by("-finished_at").only("pk").first()
    service = Service.objects.order_by("id").only("pk").first()
    prefix = str(failed.pk)[:8]

    pages = [
        ("baseline: API key list (near-empty)", "/admin/registry/apikey/"),
        ("dashboard (admin index)", "/admin/"),
        ("dashboard, runs-chart cache cold", "/admin/", runs_chart_cache_clear),
        ("run list, unfiltered", "/admin/workflows/workflowrun/"),
        ("run list, workflow=project_planning", "/admin/workflows/workflowrun/?workflow=project_planning"),
        ("run list, status=failed", "/admin/workflows/workflowrun/?status__exact=failed"),
        ("run list, status=running", "/admin/workflows/workflowrun/?status__exact=running"),
        ("run list, failed in the last 24 h", "/admin/workflows/workflowrun/?failed_within=24h"),
        ("run list, search by id prefix", f"/admin/workflows/workflowrun/?q={prefix}"),
        ("run list, page 50", "/admin/workflows/workflowrun/?p=50"),
        ("run page (failed run, 3 attempts)", f"/admin/workflows/workflowrun/{failed.pk}/change/"),
        ("service list", "/admin/registry/service/"),
        ("service page (uptime + latency)", f"/admin/registry/service/{service.pk}/change/"),
    ]
    print(f"admin pages on {connection.settings_dict['NAME']}: ~{sizes.get('workflows_workflowrun', 0):,} runs, "
          f"~{sizes.get('workflows_steprun', 0):,} steps, ~{sizes.get('registry_healthsnapshot', 0):,} snapshots; "
          f"median of {args.repeat} after 1 warm-up; target <= {TARGET_MS:.0f} ms")
    header = f"{'page':<40} {'median ms':>10} {'best ms':>8} {'queries':>8} {'KiB':>6} {'ratio':>6}  ok"
    print(header)
    print("-" * len(header))
    baseline = None
    for label, url, *before in pages:
        median, best, queries, size = measure(client, url, args.repeat, *before)
        baseline = baseline or median
        ok = "yes" if median <= TARGET_MS else "NO"
        print(f"{label:<40} {median:>10.1f} {best:>8.1f} {queries:>8} {size / 1024:>6.0f} "
              f"{median / baseline:>6.1f}  {ok}")


if __name__ == "__main__":
    main()
