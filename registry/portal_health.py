"""The portal's own health (``GET /health``), in the integration guide's format.

Each probe is short and bounded: a load balancer polls this endpoint, so a dead
Redis must turn into ``false`` within about a second, never into a hung request.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

logger = logging.getLogger(__name__)

_redis_clients: dict[tuple[str, float], Any] = {}
_redis_lock = threading.Lock()


def _check_database() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:  # noqa: BLE001 - any failure means "not healthy"
        logger.warning("health: database check failed", exc_info=True)
        return False


def _check_cache() -> bool:
    try:
        cache.set("portal:health", "ok", timeout=10)
        return cache.get("portal:health") == "ok"
    except Exception:  # noqa: BLE001
        logger.warning("health: cache check failed", exc_info=True)
        return False


def _redis_client(url: str, timeout: float):
    import redis  # only needed when the broker is Redis

    with _redis_lock:
        client = _redis_clients.get((url, timeout))
        if client is None:
            client = redis.Redis.from_url(
                url, socket_connect_timeout=timeout, socket_timeout=timeout, retry_on_timeout=False
            )
            _redis_clients[(url, timeout)] = client
        return client


def _check_broker() -> bool:
    url = settings.CELERY_BROKER_URL
    timeout = settings.HEALTH_BROKER_TIMEOUT_SECONDS
    scheme = urlsplit(url).scheme
    try:
        if scheme in ("redis", "rediss"):
            return bool(_redis_client(url, timeout).ping())
        if scheme == "filesystem":
            folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
            return folder.is_dir()
        if scheme == "memory":
            return True
        from kombu import Connection

        with Connection(url, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:  # noqa: BLE001
        logger.warning("health: broker check failed", exc_info=True)
        return False


def portal_health() -> dict[str, Any]:
    """``{"status", "database", "cache", "broker", "dependencies", "timestamp"}``."""
    database = _check_database()
    cache_ok = _check_cache()
    broker = _check_broker()
    dependencies = database and cache_ok and broker
    return {
        "status": "healthy" if dependencies else "unhealthy",
        "database": database,
        "cache": cache_ok,
        "broker": broker,
        "dependencies": dependencies,
        "timestamp": timezone.now().isoformat(),
    }
