"""The two PostgreSQL statements of the engine's hot path, and how they are run.

Every step costs one statement at its boundary (``BOUNDARY_SQL``: record the try, finish
the step, merge the run's context, and queue or claim the next step with its "sent"
attempt row), plus one claim (``CLAIM_SQL``) per task. Each is one round trip and one
commit. The ORM does the same in a transaction of five to eight queries
(``claims.claim_orm``, ``transitions.step_complete``): that path runs on SQLite (the
embedded default) and whenever a step's next one is human. The hand-written SQL stays on
PostgreSQL because a benchmark shows it earns its place: 3.90 ms of CPU per step (Python
plus its PostgreSQL backend) against 11.78 for the ORM path, 11.6 against 33.3 ms of wall
time with the HTTP call (``python -m bench.workflows_paths``, 2026-12-01; ``docs/benchmarks.md``,
Workflows, "Which hot-path SQL earns its place"). This is the engine's only
``connection.vendor`` branch (``hot_sql``).

Both run as server-side prepared statements (``prepare=True`` on a psycopg cursor of
Django's connection): Django binds parameters client-side and never prepares; prepared,
a step takes 0.7 ms less wall time (same bench; the same CPU within noise). Django's own alternative,
``OPTIONS={"server_side_binding": True, "prepare_threshold": …}``, would switch every
query of the process to server-side binding, which some of the portal's queries do not
survive; so this module asks psycopg for the two statements only (and the query capture
of tests and DEBUG records them like Django's own). ``WORKFLOW_PREPARED_STATEMENTS=false``
turns preparation off behind a pooler that cannot keep prepared statements (PgBouncer
older than 1.21 in transaction mode).
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection


def hot_sql() -> bool:
    """True where the hand-written statements run (PostgreSQL); the ORM path elsewhere."""
    return connection.vendor == "postgresql"


# Claim: take the step (queued/retrying and due, or running with an expired lease), read its
# run, close the previous try if its worker was lost, and write this try's attempt row as
# "sent" (so the try is on record before the request leaves). ``attempts_total`` is bumped by
# every claim: it numbers the attempt and is the fencing token a completion must still match.
CLAIM_SQL = """
WITH c AS (
    UPDATE workflows_steprun AS s
       SET status = 'running', lease_expires_at = %(lease)s, deliveries = s.deliveries + 1,
           attempts_total = s.attempts_total + 1, started_at = COALESCE(s.started_at, %(now)s)
      FROM workflows_workflowrun AS r
     WHERE s.id = %(id)s AND r.id = s.run_id
       AND ((s.status IN ('queued', 'retrying') AND s.next_attempt_at <= %(due)s)
            OR (s.status = 'running' AND s.lease_expires_at < %(now)s))
    RETURNING s.id AS step_id, s."index", s.name, s.deliveries, s.attempt_count, s.attempts_total,
              s.generation, r.id AS run_id, r.workflow, r.version, r.status AS run_status,
              r.cancel_requested, r.context
), lost AS (
    UPDATE workflows_stepattempt AS a
       SET outcome = 'worker_lost', error = %(lost)s, finished_at = %(now)s
      FROM c
     WHERE a.step_id = c.step_id AND a.outcome = 'sent' AND a.number < c.attempts_total
    RETURNING a.id
), a AS (
    INSERT INTO workflows_stepattempt
           (step_id, number, service_name, request_method, request_url, response_body, error,
            outcome, worker, started_at)
    SELECT step_id, attempts_total, '', '', '', '', '', 'sent', %(worker)s::text, %(now)s::timestamptz
      FROM c
     WHERE run_status = 'running' AND NOT cancel_requested AND deliveries <= %(cap)s
    RETURNING id
)
SELECT "index", name, deliveries, attempt_count, attempts_total, generation, run_id, workflow, version,
       run_status, cancel_requested, context, (SELECT id FROM a), (SELECT count(*) FROM lost)
  FROM c
"""

# A step boundary: each part conditional on the one before (a lost lease or a cancelled run
# changes nothing further). ``inline``: the next step is claimed for this worker (running,
# leased, its "sent" row written) instead of queued for a message.
BOUNDARY_SQL = """
WITH s AS (
    UPDATE workflows_steprun
       SET status = %(status)s, output = %(output)s, error = %(error)s, finished_at = %(now)s,
           lease_expires_at = NULL, attempt_count = attempt_count + 1, deliveries = 0
     WHERE id = %(step)s AND status = 'running' AND attempts_total = %(token)s
    RETURNING id
), a AS (
    UPDATE workflows_stepattempt
       SET service_id = %(service_id)s::bigint, service_name = %(service_name)s::text,
           request_method = %(method)s::text, request_url = %(url)s::text,
           request_body = %(request_body)s::jsonb, response_status = %(response_status)s::int,
           response_body = %(response_body)s::text, latency_ms = %(latency_ms)s::float8,
           error = %(attempt_error)s::text, outcome = %(outcome)s::text, worker = %(worker)s::text,
           started_at = %(started_at)s::timestamptz, finished_at = %(finished_at)s::timestamptz
     WHERE id = %(attempt)s::bigint AND EXISTS (SELECT 1 FROM s)
), r AS (
    UPDATE workflows_workflowrun
       SET context = %(context)s,
           status = CASE WHEN %(last)s THEN 'succeeded' ELSE status END,
           finished_at = CASE WHEN %(last)s THEN %(now)s ELSE finished_at END
     WHERE id = %(run)s AND status = 'running' AND NOT cancel_requested AND EXISTS (SELECT 1 FROM s)
    RETURNING id
), n AS (
    UPDATE workflows_steprun
       SET status = CASE WHEN %(inline)s THEN 'running' ELSE 'queued' END, next_attempt_at = %(now)s,
           lease_expires_at = CASE WHEN %(inline)s THEN %(lease)s::timestamptz END,
           deliveries = deliveries + CASE WHEN %(inline)s THEN 1 ELSE 0 END,
           attempts_total = attempts_total + CASE WHEN %(inline)s THEN 1 ELSE 0 END,
           started_at = CASE WHEN %(inline)s THEN COALESCE(started_at, %(now)s) ELSE started_at END,
           error = '', output = NULL, finished_at = NULL
     WHERE run_id = %(run)s AND "index" = %(next)s AND EXISTS (SELECT 1 FROM r)
    RETURNING id, name, deliveries, attempt_count, attempts_total, generation
), lost AS (
    UPDATE workflows_stepattempt AS a
       SET outcome = 'worker_lost', error = %(lost)s, finished_at = %(now)s
      FROM n
     WHERE %(inline)s AND a.step_id = n.id AND a.outcome = 'sent' AND a.number < n.attempts_total
    RETURNING a.id
), na AS (
    INSERT INTO workflows_stepattempt
           (step_id, number, service_name, request_method, request_url, response_body, error,
            outcome, worker, started_at)
    SELECT id, attempts_total, '', '', '', '', '', 'sent', %(worker)s::text, %(now)s::timestamptz
      FROM n
     WHERE %(inline)s AND deliveries <= %(cap)s
    RETURNING id
)
SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM r), n.id, n.name, n.deliveries, n.attempt_count,
       n.attempts_total, n.generation, (SELECT id FROM na), (SELECT count(*) FROM lost)
  FROM (SELECT 1) AS one LEFT JOIN n ON true
"""


def hot_statement(sql: str, params: dict) -> tuple | None:
    """Run one of the statements above on Django's connection; returns its first row."""
    if not settings.WORKFLOW_PREPARED_STATEMENTS:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()
    import psycopg

    connection.ensure_connection()
    if connection.connection.prepare_threshold is None:
        # Django sets None ("never prepare"), which makes psycopg ignore prepare=True too. A
        # threshold no query reaches keeps automatic preparation off for every other query.
        connection.connection.prepare_threshold = 2**31 - 1
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        if connection.queries_logged:  # recorded like Django's own queries (tests, DEBUG)
            with connection.make_debug_cursor(cursor).debug_sql(sql, params):
                cursor.execute(sql, params, prepare=True)
        else:
            cursor.execute(sql, params, prepare=True)
        return cursor.fetchone()
