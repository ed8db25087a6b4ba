"""The test suite really runs on PostgreSQL and Redis."""

from django.conf import settings
from django.db import connection


def test_it_uses_postgresql(db):
    assert connection.vendor == "postgresql"
    with connection.cursor() as cur:
        cur.execute("select 1")
        assert cur.fetchone() == (1,)


def test_it_uses_redis_for_the_cache():
    assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache")
