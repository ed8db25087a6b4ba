"""Fill a bench database with admin-scale data: 1,000,000 runs, 5,000,000 steps, 10,000,000 snapshots.

    .venv/bin/python bench/admin/generate.py            # (re)creates portal_bench_admin
    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/other .venv/bin/python bench/admin/generate.py

Everything is server-side SQL (INSERT … SELECT generate_series): no rows travel
through Python. Secondary indexes of the big tables are dropped during the load
and rebuilt after it (their exact definitions are read from pg_indexes, so the
bench measures the indexes the migrations create); foreign-key triggers are off
during the load (session_replication_role = replica) because the generator
writes consistent ids by construction. Then VACUUM ANALYZE.

Shape: 200 services over 7 types (mostly passing, a few warning/critical/
maintenance); a probe every 15 s per service (10 M snapshots ≈ 8.7 days); a short
outage per service per day for 40 days (StatusChange + BreakerEvent pairs); runs
every 2.6 s over 30 days across 4 workflows (2 % failed at their last step, 1 %
cancelled, 300 still running), 5 steps each, attempts (3 for a failed step) for
the runs of the last 2 days.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/portal_bench_admin"

RUNS = int(os.environ.get("BENCH_RUNS", 1_000_000))
STEPS_PER_RUN = 5
SNAPSHOTS = int(os.environ.get("BENCH_SNAPSHOTS", 10_000_000))
SERVICES = 200

TYPES = ("WEB_DASHBOARD", "PROJECT_COORDINATOR", "PLANNING_SYSTEM", "AGENT_ORCHESTRATOR",
         "MODEL_ORCHESTRATION", "TOOL_INTEGRATION", "SERVICE_INTEGRATION")
WORKFLOWS = ("project_creation", "project_planning", "agent_task_execution", "human_interaction")
BIG_TABLES = ("registry_healthsnapshot", "workflows_workflowrun", "workflows_steprun", "workflows_stepattempt")


def _array(values) -> str:
    return "ARRAY[" + ",".join(f"'{v}'" for v in values) + "]"


SQL = [
    ("services", f"""
INSERT INTO registry_service (name, type, url, health_url, metadata, capabilities, endpoints, tags,
  criticality, status, status_reason, status_changed_at, registered_at, updated_at,
  check_interval_seconds, check_timeout_seconds, failures_before_critical, successes_before_passing,
  consecutive_failures, consecutive_successes, last_latency_ms, next_check_at, last_checked_at)
SELECT lower(replace(t, '_', '-')) || '-' || g, t,
  'http://10.0.' || (g / 250) || '.' || (g % 250) || ':8000', 'http://10.0.' || (g / 250) || '.' || (g % 250) || ':8000/health',
  '{{"version": "1.4.2"}}', '[]', '[]', '[]',
  CASE WHEN g % 3 = 0 THEN 'critical' ELSE 'non_critical' END,
  CASE WHEN g % 40 = 0 THEN 'critical' WHEN g % 25 = 0 THEN 'warning' WHEN g % 97 = 0 THEN 'maintenance' ELSE 'passing' END,
  '', now() - interval '1 hour', now() - interval '45 days', now(),
  15, 5, 2, 1, 0, 0, 20, now(), now()
FROM generate_series(1, {SERVICES}) g, LATERAL (SELECT ({_array(TYPES)})[1 + g % {len(TYPES)}] AS t) x
"""),
    ("health snapshots", f"""
INSERT INTO registry_healthsnapshot (service_id, checked_at, status, http_status, latency_ms, error, details)
SELECT m.lo + (g % {SERVICES}), now() - (g / {SERVICES}) * interval '15 seconds',
  CASE WHEN g % 997 = 0 THEN 'critical' WHEN g % 211 = 0 THEN 'warning' ELSE 'passing' END,
  CASE WHEN g % 997 = 0 THEN 503 ELSE 200 END, 4 + (g % 89) * 0.6 + (g % 7), '', '{{}}'::jsonb
FROM generate_series(0, {SNAPSHOTS} - 1) g, (SELECT min(id) AS lo FROM registry_service) m
"""),
    ("status changes", """
INSERT INTO registry_statuschange (service_id, service_name, service_type, old_status, new_status, reason, at)
SELECT s.id, s.name, s.type, e.old, e.new, 'bench outage',
  now() - interval '40 days' + d * interval '1 day' + (s.id % 600) * interval '1 minute'
    + CASE WHEN e.new = 'passing' THEN (5 + s.id % 55) * interval '1 minute' ELSE interval '0' END
FROM registry_service s, generate_series(0, 39) d,
  (VALUES ('passing', 'critical'), ('critical', 'passing')) AS e(old, new)
"""),
    # Synthetic history is not news: marked processed, so the outbox task raises no alerts for it.
    ("history processed", """
UPDATE registry_statuschange SET processed = at WHERE processed IS NULL AND reason = 'bench outage'
"""),
    ("breaker events", """
INSERT INTO registry_breakerevent (service_id, service_name, old_state, new_state, at, last_error, actor)
SELECT s.id, s.name, e.old, e.new,
  now() - interval '40 days' + d * interval '1 day' + (s.id % 600) * interval '1 minute'
    + CASE WHEN e.new = 'closed' THEN (5 + s.id % 55) * interval '1 minute' ELSE interval '0' END,
  CASE WHEN e.new = 'open' THEN 'HTTP 503' ELSE '' END, ''
FROM registry_service s, generate_series(0, 40) d,
  (VALUES ('closed', 'open'), ('open', 'closed')) AS e(old, new)
WHERE now() - interval '40 days' + d * interval '1 day' + (s.id % 600) * interval '1 minute' < now()
"""),
    ("breaker history processed", """
UPDATE registry_breakerevent SET processed = at WHERE processed IS NULL
"""),
    ("workflow runs", f"""
INSERT INTO workflows_workflowrun (id, workflow, version, status, input, context, error, failed_step,
  idempotency_key, triggered_by, cancel_requested, created_at, started_at, finished_at)
SELECT gen_random_uuid(), ({_array(WORKFLOWS)})[1 + g % 4], 1, st,
  '{{"name": "bench"}}', '{{"name": "bench", "project_id": "p-1"}}',
  CASE WHEN st = 'failed' THEN 'Service error: agent-orchestrator-1 answered HTTP 500 (step step_4, after 3 attempts)'
       WHEN st = 'cancelled' THEN 'Cancelled by bench' ELSE '' END,
  CASE WHEN st = 'failed' THEN 'step_4' ELSE '' END, NULL, 'bench', st = 'cancelled',
  at, at, CASE WHEN st = 'running' THEN NULL ELSE at + interval '3 seconds' END
FROM generate_series(1, {RUNS}) g,
  LATERAL (SELECT now() - g * (interval '30 days' / {RUNS}) AS at,
                  CASE WHEN g <= 300 THEN 'running' WHEN g % 50 = 0 THEN 'failed'
                       WHEN g % 97 = 0 THEN 'cancelled' ELSE 'succeeded' END AS st) x
"""),
    ("steps", f"""
INSERT INTO workflows_steprun (run_id, index, name, kind, service_type, required, status, attempt_count,
  attempts_total, output, error, deliveries, started_at, finished_at)
SELECT r.id, i, 'step_' || i, 'http', ({_array(TYPES)})[1 + i], i <> 2,
  CASE r.status
    WHEN 'succeeded' THEN 'succeeded'
    WHEN 'failed' THEN CASE WHEN i < 4 THEN 'succeeded' ELSE 'failed' END
    WHEN 'cancelled' THEN CASE WHEN i < 2 THEN 'succeeded' ELSE 'skipped' END
    ELSE CASE WHEN i < 2 THEN 'succeeded' WHEN i = 2 THEN 'running' ELSE 'pending' END
  END,
  CASE WHEN r.status = 'failed' AND i = 4 THEN 3 ELSE 1 END,
  CASE WHEN r.status = 'failed' AND i = 4 THEN 3 ELSE 1 END,
  NULL, CASE WHEN r.status = 'failed' AND i = 4 THEN 'HTTP 500' ELSE '' END, 0,
  r.started_at + i * interval '500 milliseconds', r.started_at + i * interval '500 milliseconds' + interval '400 milliseconds'
FROM workflows_workflowrun r CROSS JOIN generate_series(0, {STEPS_PER_RUN - 1}) i
"""),
    ("attempts (runs of the last 2 days)", """
INSERT INTO workflows_stepattempt (step_id, number, service_name, request_method, request_url, request_body,
  response_status, response_body, latency_ms, error, outcome, worker, started_at, finished_at)
SELECT s.id, n, lower(s.service_type) || '-1', 'POST', 'http://10.0.0.1:8000/' || s.name, '{}'::jsonb,
  CASE WHEN s.status = 'failed' THEN 500 ELSE 200 END, '{}', 20 + n,
  CASE WHEN s.status = 'failed' THEN 'HTTP 500' ELSE '' END,
  CASE WHEN s.status <> 'failed' THEN 'succeeded' WHEN n < 3 THEN 'retry' ELSE 'failed' END, 'bench',
  s.started_at + (n - 1) * interval '120 milliseconds', s.started_at + (n - 1) * interval '120 milliseconds' + interval '80 milliseconds'
FROM workflows_steprun s JOIN workflows_workflowrun r ON r.id = s.run_id
  CROSS JOIN LATERAL generate_series(1, CASE WHEN s.status = 'failed' THEN 3 ELSE 1 END) n
WHERE r.created_at > now() - interval '2 days' AND s.status IN ('succeeded', 'failed')
"""),
]


def main() -> None:
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    dbname = urlsplit(url).path.lstrip("/")
    admin_url = url.rsplit("/", 1)[0] + "/postgres"

    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "berrys_portal.settings"}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)

    total = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no FK triggers during the load
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SET synchronous_commit = off")
        saved = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes i WHERE tablename = ANY(%s) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)", [list(BIG_TABLES)],
        ).fetchall()
        for name, _ in saved:
            conn.execute(f'DROP INDEX "{name}"')
        for label, sql in SQL:
            started = time.perf_counter()
            rows = conn.execute(sql).rowcount
            print(f"{label:<38} {rows:>12,} rows  {time.perf_counter() - started:7.1f} s", flush=True)
        started = time.perf_counter()
        for _, definition in saved:
            conn.execute(definition)
        print(f"{'rebuild ' + str(len(saved)) + ' indexes':<38} {'':>12}       {time.perf_counter() - started:7.1f} s")
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        print(f"{'vacuum analyze':<38} {'':>12}       {time.perf_counter() - started:7.1f} s")
    print(f"done in {time.perf_counter() - total:.0f} s: {url}")


if __name__ == "__main__":
    main()
