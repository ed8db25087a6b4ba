"""Discovery at scale: a pick reads a bounded number of rows whatever the registry's size,
keeps the guide's eligibility order on both databases, and sees another process's changes
at once (it holds no view of its own to go stale)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from berrys_portal.errors import NoEligibleServiceError, ServiceNotFoundError
from registry.discovery import _cursors, _pick, service_candidates, service_pick
from registry.models import HealthStatus, Service
from tests import dbenv

pytestmark = pytest.mark.both_dbs

N_TYPES = 50


def _svc(name: str, status: str, type_: str = "PLANNING_SYSTEM", **extra) -> Service:
    return Service.objects.create(name=name, type=type_, url=f"http://127.0.0.1/{name}", status=status, **extra)


def _seed(count: int) -> None:
    """``count`` services over N_TYPES types (TYPE_00…), statuses mixed, in one SQL statement."""
    statuses = "CASE n % 10 WHEN 0 THEN 'critical' WHEN 1 THEN 'warning' WHEN 2 THEN 'maintenance' ELSE 'passing' END"
    columns = ("name, type, url, health_url, metadata, capabilities, endpoints, tags, criticality, status, "
               "status_reason, registered_at, updated_at, check_interval_seconds, check_timeout_seconds, "
               "failures_before_critical, successes_before_passing, consecutive_failures, "
               "consecutive_successes, pending_approval, create_index, modify_index")
    values = (f"'seed-' || n, 'TYPE_' || substr('0' || (n % {N_TYPES}), -2, 2), 'http://127.0.0.1/' || n, '', "
              f"'{{}}', '[]', '[]', '[]', 'non_critical', {statuses}, '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, "
              "15, 5.0, 2, 1, 0, 0, FALSE, 0, 0")
    if connection.vendor == "postgresql":
        values = values.replace("substr('0' || (n % 50), -2, 2)", "lpad((n % 50)::text, 2, '0')")
        sql = f"INSERT INTO registry_service ({columns}) SELECT {values} FROM generate_series(1, {count}) AS g(n)"
    else:
        sql = (f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {count}) "
               f"INSERT INTO registry_service ({columns}) SELECT {values.replace('FALSE', '0')} FROM g")
    with connection.cursor() as cursor:
        cursor.execute(sql)
        if connection.vendor == "postgresql":
            cursor.execute("ANALYZE registry_service")


def _rows_touched(sql: str, params: list) -> tuple[int, str]:
    """Rows the query returns, and its plan (PostgreSQL: the most rows any plan node produced)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = len(cursor.fetchall())
        sql = cursor.mogrify(sql, params) if connection.vendor == "postgresql" else sql
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")  # noqa: S608 - the query above
            plan = cursor.fetchone()[0]
            plan = plan if isinstance(plan, list) else __import__("json").loads(plan)

            def nodes(node):
                yield node
                for child in node.get("Plans", []):
                    yield from nodes(child)

            return returned, max(n["Actual Rows"] * n.get("Actual Loops", 1) for n in nodes(plan[0]["Plan"]))
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return returned, " | ".join(str(row[-1]) for row in cursor.fetchall())


def test_one_pick_among_100000_services_runs_one_query_touching_a_bounded_number_of_rows(db):
    _seed(100_000)  # 2,000 per type
    service_pick(service_type="TYPE_07")  # warm (the SQL is built once per process)
    for limit, pick in ((1, lambda: [service_pick(service_type="TYPE_07")]),
                        (8, lambda: service_candidates(service_type="TYPE_07"))):
        cursor_before = _cursors["TYPE_07"]
        with CaptureQueriesContext(connection) as captured:
            picked = pick()
        assert len(captured.captured_queries) == 1
        assert "UNION ALL" in captured.captured_queries[0]["sql"]
        assert all(s.type == "TYPE_07" and s.status == HealthStatus.PASSING for s in picked)
        # The statement just run, run again with its parameters to count what it reads.
        returned, touched = _rows_touched(_pick._build(limit), _pick.params("TYPE_07", cursor_before))
        assert returned == len(picked) <= 8
        if connection.vendor == "postgresql":
            assert touched <= 6 * 8  # six index seeks of at most `limit` rows, never the type's 2,000
        else:
            assert "registry_service_pick" in touched and "SCAN registry_service" not in touched


def test_picks_rotate_through_every_passing_instance_of_a_large_type(db):
    _seed(1_000)  # 20 per type: 14 passing, 2 warning, 2 critical, 2 maintenance
    passing = set(Service.objects.filter(type="TYPE_03", status=HealthStatus.PASSING).values_list("name", flat=True))
    picks = [service_pick(service_type="TYPE_03").name for _ in range(2 * len(passing))]
    assert set(picks) == passing
    assert picks[: len(passing)] == picks[len(passing):]  # round robin, the same order again


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "plain"])
def test_the_tiers_on_this_database_passing_then_warning_then_unknown_never_the_rest(db, settings, prepared):
    settings.DISCOVERY_PREPARED_STATEMENT = prepared  # PostgreSQL only; SQLite always runs it plain
    _svc("new", HealthStatus.UNKNOWN)
    _svc("down", HealthStatus.CRITICAL)
    _svc("resting", HealthStatus.MAINTENANCE)
    _svc("waiting", HealthStatus.PASSING, pending_approval=True)
    assert {service_pick(service_type="PLANNING_SYSTEM").name for _ in range(3)} == {"new"}
    _svc("slow", HealthStatus.WARNING)
    assert {service_pick(service_type="PLANNING_SYSTEM").name for _ in range(3)} == {"slow"}
    assert [s.name for s in service_candidates(service_type="PLANNING_SYSTEM")] == ["slow"]
    _svc("good", HealthStatus.PASSING)
    assert {service_pick(service_type="PLANNING_SYSTEM").name for _ in range(3)} == {"good"}
    # The client's failover list: the best tier first, then the lower one; unknown never with healthy ones.
    assert [s.name for s in service_candidates(service_type="PLANNING_SYSTEM")] == ["good", "slow"]


def test_no_eligible_instance_answers_stay_exact(db):
    with pytest.raises(ServiceNotFoundError, match="No service of type PLANNING_SYSTEM found"):
        service_pick(service_type="PLANNING_SYSTEM")
    for i in range(25):
        _svc(f"down-{i:02d}", HealthStatus.CRITICAL)
    _svc("waiting", HealthStatus.PASSING, pending_approval=True)
    with pytest.raises(NoEligibleServiceError) as caught:
        service_pick(service_type="PLANNING_SYSTEM")
    assert caught.value.message.startswith("26 instance(s) of type PLANNING_SYSTEM registered but none is eligible "
                                           "(down-00: critical, down-01: critical")
    assert caught.value.message.endswith(", and 6 more)")


def test_all_pages_its_answer(read_client):
    for i in range(5):
        _svc(f"p{i}", HealthStatus.PASSING)
    _svc("w", HealthStatus.WARNING)
    first = read_client.get("/discovery/PLANNING_SYSTEM?all=1&page_size=4").json()
    assert first["count"] == 6 and [s["name"] for s in first["services"]] == ["p0", "p1", "p2", "p3"]
    assert first["previous"] is None and "page=2" in first["next"]
    second = read_client.get("/discovery/PLANNING_SYSTEM?all=1&page_size=4&page=2").json()
    assert [s["name"] for s in second["services"]] == ["p4", "w"] and second["next"] is None


_CHILD = """
import sys, time, django
django.setup()
from registry.discovery import service_pick
print("ready", flush=True)
for line in sys.stdin:
    print(service_pick(service_type="PLANNING_SYSTEM").name, flush=True)
"""


@pytest.mark.django_db(transaction=True)
def test_a_status_change_is_seen_by_discovery_in_another_process_within_a_second():
    a = _svc("a", HealthStatus.PASSING)
    _svc("b", HealthStatus.PASSING)
    env = {**os.environ, **dbenv.broker_env(), "DATABASE_URL": dbenv.test_database_url(),
           "DJANGO_SETTINGS_MODULE": "berrys_portal.settings"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env, cwd=Path(__file__).resolve().parents[2])
    try:
        assert child.stdout.readline().strip() == "ready"

        def pick() -> str:
            child.stdin.write("\n")
            child.stdin.flush()
            return child.stdout.readline().strip()

        assert {pick() for _ in range(4)} == {"a", "b"}
        Service.objects.filter(pk=a.pk).update(status=HealthStatus.CRITICAL)  # plain SQL: no signal anywhere
        changed = time.monotonic()
        seen = [pick() for _ in range(4)]
        assert time.monotonic() - changed < 1.0
        assert seen == ["b"] * 4
    finally:
        child.stdin.close()
        child.wait(timeout=10)
