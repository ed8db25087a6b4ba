"""Benchmark: the workflow run admin with a million runs (not a test; prints a table).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_wf_bench REDIS_URL=redis://127.0.0.1:6379/3 \\
        .venv/bin/python -m bench.workflows_admin [--rows 1000000] [--repeats 5]

Fills the bench database with ``--rows`` runs once (SQL ``generate_series``; 2% failed),
then times admin pages through Django's test client (median of ``--repeats``). The
baselines, measured in the same run: the bare ``SELECT … ORDER BY created_at DESC LIMIT 50``
the list needs, and the full ``COUNT(*)`` the admin would run without our paginator.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_wf_bench")
os.environ.setdefault("DEBUG", "0")  # as in production

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

FILL_SQL = """
INSERT INTO workflows_workflowrun (id, workflow, version, status, input, context, error, failed_step,
    idempotency_key, triggered_by, cancel_requested, created_at, started_at, finished_at)
SELECT gen_random_uuid(),
       (ARRAY['project_creation', 'project_planning', 'agent_task_execution', 'human_interaction'])[1 + i %% 4],
       1,
       CASE WHEN i %% 50 = 0 THEN 'failed' ELSE 'succeeded' END,
       '{"project_id": "p"}'::jsonb, '{"project_id": "p"}'::jsonb,
       CASE WHEN i %% 50 = 0 THEN 'Service not found: No service of type PLANNING_SYSTEM found' ELSE '' END,
       CASE WHEN i %% 50 = 0 THEN 'strategic_plan' ELSE '' END,
       NULL, 'bench', false,
       now() - make_interval(secs => i * 2), now() - make_interval(secs => i * 2),
       now() - make_interval(secs => i * 2 - 1)
  FROM generate_series(1, %(n)s) AS i
"""


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from django.contrib.auth import get_user_model
    from django.test import Client

    from bench.workflows import _ensure_database
    from workflows.models import WorkflowRun

    _ensure_database()
    have = WorkflowRun.objects.filter(triggered_by="bench").count()
    if have < args.rows:
        print(f"inserting {args.rows - have} runs …", flush=True)
        with connection.cursor() as cursor:
            cursor.execute(FILL_SQL, {"n": args.rows - have})
            cursor.execute("ANALYZE workflows_workflowrun")
    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    sample = WorkflowRun.objects.filter(status="failed").order_by("-created_at").first()
    base = "/admin/workflows/workflowrun/"
    pages = [
        ("run list, newest first", base),
        ("filter status=failed", base + "?status__exact=failed"),
        ("filter failed in the last 24 h", base + "?failed_within=24h"),
        ("filter workflow=project_planning", base + "?workflow=project_planning"),
        ("search by id prefix", base + f"?q={str(sample.pk)[:8]}"),
        ("page 200 of the list", base + "?p=200"),
        ("run page (a failed run)", f"{base}{sample.pk}/change/"),
    ]

    def raw(sql: str):
        def run():
            with connection.cursor() as cursor:
                cursor.execute(sql)
                cursor.fetchall()
        return run

    rows = []
    for label, url in pages:
        def get(url=url):
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
        get()  # warm
        rows.append((label, _median_ms(get, args.repeats)))
    baseline = _median_ms(raw("SELECT id FROM workflows_workflowrun ORDER BY created_at DESC LIMIT 50"),
                          args.repeats)
    full_count = _median_ms(raw("SELECT COUNT(*) FROM workflows_workflowrun"), args.repeats)

    total = WorkflowRun.objects.filter(triggered_by="bench").count()
    print(f"\nWorkflow run admin with {total:,} runs (median of {args.repeats}, ms)\n")
    print(f"| {'page':<34} | {'ms':>8} |")
    print(f"|{'-' * 36}|{'-' * 10}|")
    for label, ms in rows:
        print(f"| {label:<34} | {ms:>8.1f} |")
    print(f"| {'baseline: SELECT … LIMIT 50':<34} | {baseline:>8.1f} |")
    print(f"| {'avoided: full COUNT(*)':<34} | {full_count:>8.1f} |")


if __name__ == "__main__":
    main()
