"""The test database as a DATABASE_URL for the processes the tests start (workers, servers).

The suite runs on PostgreSQL + Redis and, for the tests marked ``both_dbs``, on
SQLite + the filesystem broker (see berrys_portal/settings_test.py); child processes
must open the same test database and use the same broker as the test process.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection


def test_database_url(name: str | None = None) -> str:
    """The URL of the test database (``name`` overrides the database name / file)."""
    db = connection.settings_dict
    name = name or db["NAME"]
    if connection.vendor == "sqlite":
        return f"sqlite:///{name}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"


def broker_env() -> dict[str, str]:
    """REDIS_URL / CELERY_BROKER_URL / BREAKER_STORE for a child (empty: the embedded default)."""
    if not settings.REDIS_URL:
        return {"REDIS_URL": "", "CELERY_BROKER_URL": "", "BREAKER_STORE": settings.BREAKER_STORE}
    return {"REDIS_URL": settings.REDIS_URL, "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "BREAKER_STORE": settings.BREAKER_STORE}
