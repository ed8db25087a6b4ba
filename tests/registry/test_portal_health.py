"""GET /health: the guide's format, 200 when healthy, 503 (quickly) when a dependency is down."""

from __future__ import annotations

import socket
import time

import pytest
from django.test import override_settings
from rest_framework.test import APIClient


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on exit: nothing listens there


def test_it_reports_healthy_in_the_guides_format(db):
    response = APIClient().get("/health")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "database", "cache", "broker", "dependencies", "timestamp"}
    assert body["status"] == "healthy"
    assert body["database"] is body["cache"] is body["broker"] is body["dependencies"] is True
    assert body["timestamp"].endswith("+00:00")


def test_redis_unreachable_means_503_and_cache_false(db):
    port = _closed_port()
    caches = {"default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{port}/0",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }}
    with override_settings(CACHES=caches, CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0"):
        started = time.monotonic()
        response = APIClient().get("/health/")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["cache"] is False
    assert body["broker"] is False
    assert body["database"] is True
    assert body["dependencies"] is False
    assert elapsed < 5


@pytest.mark.parametrize("broker_down", [True])
def test_a_dead_broker_alone_makes_the_portal_unhealthy(db, broker_down):
    with override_settings(CELERY_BROKER_URL=f"redis://127.0.0.1:{_closed_port()}/0"):
        response = APIClient().get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["cache"] is True and body["broker"] is False
