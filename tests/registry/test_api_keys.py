"""API keys: the create_api_key command, hashing, prompt revocation, expiry, last_used_at, write throttling."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from registry.auth import api_key_create, api_key_revoke, hash_key
from registry.models import ApiKey


def _client(plain: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
    return client


def test_create_api_key_prints_the_key_alone_on_the_last_line(db):
    out = io.StringIO()
    call_command("create_api_key", "--name", "planner", "--scopes", "register,read",
                 "--expires-in-days", "30", stdout=out)
    plain = out.getvalue().strip().splitlines()[-1]
    assert plain.startswith("bp_") and " " not in plain
    key = ApiKey.objects.get(name="planner")
    assert key.key_hash == hash_key(plain) and plain not in (key.key_hash, key.prefix)
    assert key.scopes == ["metrics", "registry:read", "registry:write"]  # the old names' new equivalents
    assert timedelta(days=29) < key.expires_at - timezone.now() <= timedelta(days=30)
    assert _client(plain).get("/registry/services").status_code == 200


def test_create_api_key_refuses_unknown_scopes(db):
    with pytest.raises(CommandError, match="Unknown scope"):
        call_command("create_api_key", "--name", "x", "--scopes", "read,admin", stdout=io.StringIO())
    assert not ApiKey.objects.exists()


def test_revocation_takes_effect_on_the_next_request(db):
    key, plain = api_key_create(name="soon-revoked", scopes=["read"])
    client = _client(plain)
    assert client.get("/discovery/PLANNING_SYSTEM").status_code == 404  # authenticated: no such type
    assert api_key_revoke(keys=ApiKey.objects.filter(pk=key.pk)) == 1
    response = client.get("/discovery/PLANNING_SYSTEM")
    assert response.status_code == 401
    assert response.json()["detail"] == "API key has been revoked."


def test_a_revocation_made_elsewhere_reaches_this_process_within_the_cache_time(db, settings):
    settings.API_KEY_CACHE_SECONDS = 5
    key, plain = api_key_create(name="revoked-elsewhere", scopes=["read"])
    client = _client(plain)
    with time_machine.travel("2026-03-01 10:00:00+00:00", tick=False) as clock:
        assert client.get("/registry/services").status_code == 200  # now cached here
        # Another process (admin on another host) revokes: this one's cache is not told.
        ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
        clock.shift(4)
        assert client.get("/registry/services").status_code == 200  # the documented bound
        clock.shift(1.5)
        response = client.get("/registry/services")
    assert response.status_code == 401
    assert response.json()["detail"] == "API key has been revoked."


def test_without_the_cache_a_revocation_made_elsewhere_is_immediate(db, settings):
    settings.API_KEY_CACHE_SECONDS = 0
    key, plain = api_key_create(name="uncached", scopes=["read"])
    client = _client(plain)
    assert client.get("/registry/services").status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    assert client.get("/registry/services").status_code == 401


def test_a_warm_key_cache_leaves_discovery_one_query(db, django_assert_num_queries):
    _, plain = api_key_create(name="warm", scopes=["read"])
    client = _client(plain)
    client.get("/discovery/PLANNING_SYSTEM")
    with django_assert_num_queries(1):  # the instances only
        assert client.get("/discovery/PLANNING_SYSTEM").status_code == 404


def test_a_key_stops_working_when_it_expires(db):
    _, plain = api_key_create(name="short", scopes=["read"], expires_at=timezone.now() + timedelta(hours=1))
    assert _client(plain).get("/registry/services").status_code == 200
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        assert _client(plain).get("/registry/services").status_code == 401


def test_last_used_at_is_written_at_most_once_a_minute(db, django_assert_num_queries):
    key, plain = api_key_create(name="busy", scopes=["read"])
    client = _client(plain)
    with time_machine.travel("2026-03-01 10:00:00+00:00", tick=False):
        client.get("/registry/services")
        key.refresh_from_db()
        first = key.last_used_at
        assert first is not None
    with time_machine.travel("2026-03-01 10:00:30+00:00", tick=False):
        with django_assert_num_queries(2) as queries:  # the key, the instances: no write
            client.get("/discovery/X")
        assert not any("UPDATE" in q["sql"] for q in queries.captured_queries)
        key.refresh_from_db()
        assert key.last_used_at == first
    with time_machine.travel("2026-03-01 10:01:01+00:00", tick=False):
        client.get("/registry/services")
        key.refresh_from_db()
        assert key.last_used_at > first


@override_settings(API_WRITE_THROTTLE_RATE="3/min")
def test_writes_are_throttled_per_key_and_reads_are_not(db):
    from django.core.cache import cache

    key_a, plain_a = api_key_create(name="a", scopes=["read", "register"])
    key_b, plain_b = api_key_create(name="b", scopes=["read", "register"])
    # Ids restart with each test database: drop counters a previous run may have left.
    counters = [f"throttle:write:key:{k.pk}" for k in (key_a, key_b)]
    cache.delete_many(counters)
    payload = {"name": "s", "type": "PLANNING_SYSTEM", "url": "http://127.0.0.1:9000"}
    client_a = _client(plain_a)
    codes = [client_a.post("/registry/services", payload, format="json").status_code for _ in range(4)]
    assert codes == [201, 200, 200, 429]
    response = client_a.post("/registry/services", payload, format="json")
    assert response.json()["code"] == "throttled"
    assert "Request was throttled" in response.json()["detail"]
    assert client_a.get("/registry/services").status_code == 200
    assert _client(plain_b).post("/registry/services", dict(payload, name="s-b"), format="json").status_code == 201
    cache.delete_many(counters)


def test_writes_still_work_when_the_throttles_cache_is_down(db):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    caches = {"default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{port}/0",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }}
    _, plain = api_key_create(name="w", scopes=["register"])
    payload = {"name": "s", "type": "PLANNING_SYSTEM", "url": "http://127.0.0.1:9000"}
    with override_settings(CACHES=caches):
        response = _client(plain).post("/registry/services", payload, format="json")
    assert response.status_code == 201
