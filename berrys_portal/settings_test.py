"""Settings for the test suite: the real PostgreSQL and Redis on this machine.

Override with DATABASE_URL / REDIS_URL (e.g. to give parallel runs their own
database name and Redis db number).
"""

import os
import tempfile

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/berrys_portal")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("DJANGO_ENV", "test")
# Tests change the registry from one process and call from another (workers): they
# want every call to see it at once. tests/registry/test_client.py turns it back on.
os.environ.setdefault("SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS", "0")
# Each test session (and the workers it starts, which inherit the environment)
# gets its own empty Prometheus multi-process directory.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="berrys-prom-"))

from berrys_portal.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins
