"""Settings for the test suite: the real PostgreSQL and Redis on this machine.

Override with DATABASE_URL / REDIS_URL (e.g. to give parallel runs their own
database name and Redis db number). ``DATABASE_URL=sqlite:///…`` with an empty
``REDIS_URL=`` runs the suite on the embedded default (SQLite, the filesystem
broker, database-held breakers): ``make test`` does that for the tests marked
``both_dbs``.
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/berrys_portal")
# Not db 0 (where a developer's own things usually live); the suite deletes what it creates.
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("DJANGO_ENV", "test")
# Tests change the registry from one process and call from another (workers): they
# want every call to see it at once. tests/registry/test_client.py turns it back on.
os.environ.setdefault("SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS", "0")
# Each test session (and the workers it starts, which inherit the environment)
# gets its own empty Prometheus multi-process directory.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="berrys-prom-"))

from berrys_portal.settings import *  # noqa: E402,F403

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A test database file beside the configured one (not Django's in-memory default):
    # the Celery workers and helper processes the tests start must open the same file.
    _sqlite_path = Path(DATABASES["default"]["NAME"])  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(_sqlite_path.with_name("test_" + _sqlite_path.name))}  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins
