"""The registry index moves once per committed transaction however many rows it changes (PostgreSQL).

Migration 0014: one bump of the counter per transaction, the rows it changed all carrying
that index, a type's index moved once, and one notification. Before it, every changed row
bumped the counter (the sweep's groups of 1,000 status changes took over a second to commit).
"""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection, transaction

from registry.models import HealthStatus, Service
from registry.watch import CHANNEL, index_read
from tests.dbenv import test_database_url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite keeps its per-row triggers (one writer at a time, no row versions to walk)")


def _planners(count: int, service_type: str = "PLANNING_SYSTEM") -> list[int]:
    Service.objects.bulk_create(
        Service(name=f"{service_type.lower()}-{i}", type=service_type, url=f"http://127.0.0.1:{9000 + i}",
                health_url=f"http://127.0.0.1:{9000 + i}/health", status=HealthStatus.UNKNOWN)
        for i in range(count)
    )
    return list(Service.objects.filter(type=service_type).order_by("id").values_list("id", flat=True))


def test_one_transaction_changing_many_rows_moves_the_index_once():
    ids = _planners(300)
    created = index_read()
    # The bulk insert was one transaction: every row has its index.
    assert set(Service.objects.filter(pk__in=ids).values_list("create_index", flat=True)) == {created}

    with transaction.atomic():
        Service.objects.filter(pk__in=ids[:200]).update(status=HealthStatus.PASSING)
        Service.objects.filter(pk__in=ids[200:]).update(status=HealthStatus.CRITICAL)
    moved = index_read()
    assert moved == created + 1
    assert set(Service.objects.filter(pk__in=ids).values_list("modify_index", flat=True)) == {moved}
    assert index_read(service_type="PLANNING_SYSTEM") == moved

    # The next commit gets the next index; a change readers do not see gets none.
    Service.objects.filter(pk=ids[0]).update(status=HealthStatus.WARNING)
    assert index_read() == moved + 1
    assert Service.objects.get(pk=ids[0]).modify_index == moved + 1
    assert Service.objects.get(pk=ids[1]).modify_index == moved
    Service.objects.filter(pk__in=ids).update(status_reason="slow", consecutive_failures=2)
    assert index_read() == moved + 1


def test_two_types_in_one_transaction_and_a_deletion():
    planners = _planners(5)
    coordinators = _planners(5, "PROJECT_COORDINATOR")
    start = index_read()
    with transaction.atomic():
        Service.objects.filter(pk__in=planners + coordinators).update(status=HealthStatus.PASSING)
        Service.objects.filter(pk=planners[0]).delete()
    assert index_read() == start + 1
    assert index_read(service_type="PLANNING_SYSTEM") == start + 1
    assert index_read(service_type="PROJECT_COORDINATOR") == start + 1
    # A type's index never moves backwards, though rows of an older index are upserted after it.
    Service.objects.filter(pk=coordinators[0]).update(tags=["x"])
    assert index_read(service_type="PROJECT_COORDINATOR") == start + 2
    assert index_read(service_type="PLANNING_SYSTEM") == start + 1


def test_a_rolled_back_transaction_leaves_no_index_behind():
    ids = _planners(3)
    start = index_read()
    with pytest.raises(RuntimeError), transaction.atomic():
        Service.objects.filter(pk__in=ids).update(status=HealthStatus.PASSING)
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the triggers run now, inside the transaction
        assert index_read() == start + 1
        raise RuntimeError("roll back")
    assert index_read() == start
    Service.objects.filter(pk__in=ids).update(status=HealthStatus.CRITICAL)
    assert index_read() == start + 1  # the setting went with the rollback: a fresh bump


def test_one_notification_per_commit():
    ids = _planners(50)
    with psycopg.connect(test_database_url(), autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        Service.objects.filter(pk__in=ids).update(status=HealthStatus.PASSING)
        expected = str(index_read())
        payloads = [n.payload for n in listener.notifies(timeout=2.0)]
    assert payloads == [expected]
