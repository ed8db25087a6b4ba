"""The write rate limit: a fixed-window counter (one Redis round trip per write), exact at its boundary."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache
from django.test.utils import override_settings
from rest_framework.test import APIClient

from registry.auth import api_key_create

pytestmark = pytest.mark.both_dbs

LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "rate-limit-test"}}
PAYLOAD = {"name": "s", "type": "PLANNING_SYSTEM", "url": "http://127.0.0.1:9000"}


def _writer() -> tuple[APIClient, str]:
    key, plain = api_key_create(name="w", scopes=["registry:read", "registry:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
    return client, f"throttle:write:key:{key.pk}"


@pytest.mark.parametrize("caches", [None, LOCMEM], ids=["redis", "memory-fallback"])
def test_the_rate_th_write_passes_the_next_is_refused_until_the_window_ends(db, caches, settings):
    if caches is None and not settings.REDIS_URL:
        pytest.skip("the Redis path needs REDIS_URL")
    with override_settings(API_WRITE_THROTTLE_RATE="5/s", **({"CACHES": caches} if caches else {})):
        client, counter = _writer()
        cache.delete(counter)  # ids restart with each test database
        codes = [client.post("/registry/services", PAYLOAD, format="json").status_code for _ in range(5)]
        assert codes == [201, 200, 200, 200, 200]
        refused = client.post("/registry/services", PAYLOAD, format="json")
        assert refused.status_code == 429
        assert refused.json()["code"] == "throttled"
        assert 0 < int(refused["Retry-After"]) <= 1
        assert client.get("/registry/services").status_code == 200  # reads are never counted
        time.sleep(1.05)  # the window ends: a new one opens with the next write
        assert client.post("/registry/services", PAYLOAD, format="json").status_code == 200
        cache.delete(counter)


def test_the_redis_counter_is_one_integer_with_an_expiry_whatever_the_traffic(db, settings):
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    import redis

    with override_settings(API_WRITE_THROTTLE_RATE="1000/min"):
        client, counter = _writer()
        cache.delete(counter)
        for _ in range(30):
            client.put("/registry/services/999999/heartbeat")  # 404s still count as writes
        raw = redis.Redis.from_url(settings.REDIS_URL)
        full = cache.make_key(counter)
        assert raw.type(full) == b"string" and int(raw.get(full)) == 30
        assert 0 < raw.pttl(full) <= 60_000
        cache.delete(counter)


def test_every_write_reuses_one_redis_client_and_script(db, settings):
    """Django's Redis backend builds a new client per call; the limiter keeps one per backend
    (it used to register a script per write, each holding its own client)."""
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    from berrys_portal import ratelimit

    with override_settings(API_WRITE_THROTTLE_RATE="1000/min"):
        client, counter = _writer()
        cache.delete(counter)
        client.put("/registry/services/999999/heartbeat")
        first, held = ratelimit._redis_script(), len(ratelimit._scripts)
        for _ in range(20):
            client.put("/registry/services/999999/heartbeat")
        assert ratelimit._redis_script() is first
        assert len(ratelimit._scripts) == held  # not one more per write
        cache.delete(counter)
