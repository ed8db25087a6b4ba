"""API-key authentication and scope permissions for the REST API.

Keys look like ``bp_<random>``; only their SHA-256 is stored (keys are 32
random bytes, so a slow hash adds nothing). Views declare the scope they need
with ``required_scopes = {"GET": "registry:read", "POST": "registry:write", ...}``
or a single ``required_scope``; what each scope allows is in ``registry.scopes``.
Ownership (a key's own services and runs) is checked by the service functions.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions, throttling

from berrys_portal.ratelimit import window_hit
from registry.audit import actor_of, audit_record
from registry.models import ApiKey, AuditEvent
from registry.scopes import (
    DEPRECATED_NAMES,
    gateway_allow_normalize,
    key_has_scope,
    scopes_effective,
    scopes_normalize,
)
from registry.types import TYPE_PATTERN

logger = logging.getLogger(__name__)

KEY_PREFIX = "bp_"


def hash_key(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def api_key_create(
    *,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    created_by=None,
    service_types: list[str] | None = None,
    name_patterns: list[str] | None = None,
    gateway_allow: list[str] | None = None,
    max_instances: int | None = None,
    max_hosts: int | None = None,
    actor: str = "",
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plain key (shown once, never stored).

    Old scope names are accepted and stored as their new equivalents (with a
    deprecation warning). Raises ValueError naming a bad scope, type, pattern or
    allow-list entry. Audited (``AuditEvent`` key_created).
    """
    if not name or not name.strip():
        raise ValueError("A key needs a name.")
    scope_list = scopes_normalize(scopes, where=f"key {name!r}")
    if not scope_list:
        raise ValueError("A key needs at least one scope.")
    types = sorted({t.strip().upper() for t in service_types or () if t.strip()})
    bad = [t for t in types if not TYPE_PATTERN.match(t) or len(t) > 64]
    if bad:
        raise ValueError(f"Not a service type: {', '.join(bad)} (UPPER_SNAKE_CASE, e.g. PLANNING_SYSTEM).")
    patterns = sorted({p.strip() for p in name_patterns or () if p.strip()})
    allow = gateway_allow_normalize(list(gateway_allow or ()))
    for label, limit in (("max_instances", max_instances), ("max_hosts", max_hosts)):
        if limit is not None and limit < 1:
            raise ValueError(f"{label} must be at least 1.")
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        key = ApiKey.objects.create(
            name=name,
            prefix=plain[:10],
            key_hash=hash_key(plain),
            scopes=scope_list,
            service_types=types,
            name_patterns=patterns,
            gateway_allow=allow,
            max_instances=max_instances,
            max_hosts=max_hosts,
            expires_at=expires_at,
            created_by=created_by,
        )
        details = {"scopes": scope_list}
        for label, value in (("service_types", types), ("name_patterns", patterns), ("gateway_allow", allow),
                             ("max_instances", max_instances), ("max_hosts", max_hosts),
                             ("expires_at", expires_at.isoformat() if expires_at else None)):
            if value:
                details[label] = value
        audit_record(
            action=AuditEvent.Action.KEY_CREATED, actor=actor or actor_of(user=created_by),
            target=str(key), details=details,
        )
    return key, plain


def api_key_revoke(*, keys, actor: str = "command") -> int:
    """Revoke keys (a queryset). Returns how many were revoked; each one is audited.

    Effective at once in this process; other processes drop their cached copy
    within ``API_KEY_CACHE_SECONDS``.
    """
    now = timezone.now()
    with transaction.atomic():
        revoked = list(keys.select_for_update().filter(revoked_at__isnull=True))
        ApiKey.objects.filter(pk__in=[k.pk for k in revoked]).update(revoked_at=now)
        for key in revoked:
            audit_record(action=AuditEvent.Action.KEY_REVOKED, actor=actor, target=str(key))
    api_key_cache_clear()
    return len(revoked)


# key_hash -> (fetched at, row). Valid keys only; unknown or revoked ones always hit the database.
_key_cache: dict[str, tuple[float, ApiKey]] = {}
_KEY_CACHE_MAX_ENTRIES = 10_000


def api_key_cache_clear() -> None:
    _key_cache.clear()


def key_lookup_cached(key_hash: str) -> ApiKey | None:
    """The copy ``_key_lookup`` would return from its cache now, or None (it would query). No database."""
    ttl = settings.API_KEY_CACHE_SECONDS
    hit = _key_cache.get(key_hash) if ttl > 0 else None
    if hit is not None and time.time() - hit[0] < ttl:
        return hit[1]
    return None


def last_used_fresh(key: ApiKey, now: datetime) -> bool:
    """Whether ``_touch_last_used`` would write nothing now."""
    interval = timedelta(seconds=settings.API_KEY_LAST_USED_INTERVAL_SECONDS)
    return key.last_used_at is not None and now - key.last_used_at < interval


def _key_lookup(key_hash: str) -> ApiKey | None:
    """One indexed query, or a copy at most ``API_KEY_CACHE_SECONDS`` old (0: no cache).

    The cache takes the key query off the discovery hot path; the price is that
    a revocation made by another process takes up to that many seconds to reach
    this one. Expiry needs no database: it is checked on every request.
    """
    ttl = settings.API_KEY_CACHE_SECONDS
    now = time.time()
    if ttl > 0:
        hit = _key_cache.get(key_hash)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
    key = ApiKey.objects.filter(key_hash=key_hash).first()
    if ttl > 0 and key is not None and key.revoked_at is None:
        if len(_key_cache) >= _KEY_CACHE_MAX_ENTRIES:  # crude bound; valid keys are few
            _key_cache.clear()
        _key_cache[key_hash] = (now, key)
    return key


@dataclass(frozen=True)
class ApiPrincipal:
    """The authenticated caller: DRF's ``request.user`` for API calls."""

    key: ApiKey

    is_authenticated = True
    is_anonymous = False

    @property
    def username(self) -> str:
        return actor_of(key=self.key)

    def has_scope(self, scope: str) -> bool:
        """Aliases and implied scopes count (``registry.scopes``)."""
        return key_has_scope(self.key, scope)


_warned_old_scopes: set[int] = set()


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Token <key>`` or ``Authorization: Bearer <key>``.

    The key is found by its unique hash (one indexed query, cached in-process
    for ``API_KEY_CACHE_SECONDS``, see ``_key_lookup``).
    """

    keywords = ("token", "bearer")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        parts = header.split()
        if not parts or parts[0].lower() not in self.keywords:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: use 'Token <key>' or 'Bearer <key>'."
            )
        key = _key_lookup(hash_key(parts[1]))
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        now = timezone.now()
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("API key has been revoked.")
        if key.expires_at is not None and key.expires_at <= now:
            raise exceptions.AuthenticationFailed("API key has expired.")
        _touch_last_used(key, now)
        if key.pk not in _warned_old_scopes and DEPRECATED_NAMES.intersection(key.scopes):
            _warned_old_scopes.add(key.pk)  # once per key and process: this is the hot path
            logger.warning("API key %s (%s…) still holds deprecated scope names %s; they work as %s",
                           key.name, key.prefix, sorted(DEPRECATED_NAMES.intersection(key.scopes)),
                           sorted(scopes_effective(tuple(key.scopes))))
        return ApiPrincipal(key), key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) when credentials are missing.
        return 'Token realm="berrys-portal"'


def _touch_last_used(key: ApiKey, now: datetime) -> None:
    """Record use at most once per interval: a write on every request would halve throughput."""
    if last_used_fresh(key, now):
        return
    interval = timedelta(seconds=settings.API_KEY_LAST_USED_INTERVAL_SECONDS)
    # Conditional UPDATE: of concurrent requests only one writes; no row lock is held.
    ApiKey.objects.filter(pk=key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - interval)
    ).update(last_used_at=now)
    key.last_used_at = now


class HasApiKey(permissions.BasePermission):
    """Requires a valid key, and the scope the view declares for this method."""

    message = "This endpoint needs an API key with the right scope."

    def has_permission(self, request, view) -> bool:
        principal = request.user
        if not isinstance(principal, ApiPrincipal):
            raise exceptions.NotAuthenticated("Authentication credentials were not provided.")
        scope = required_scope(view, request.method)
        if isinstance(scope, tuple):  # any one of them
            if not any(principal.has_scope(s) for s in scope):
                names = " or ".join(f"'{s}'" for s in scope)
                raise exceptions.PermissionDenied(f"This API key needs the {names} scope.")
        elif scope and not principal.has_scope(scope):
            raise exceptions.PermissionDenied(f"This API key lacks the '{scope}' scope.")
        return True


def required_scope(view, method: str) -> str | tuple[str, ...] | None:
    """The scope a view needs for ``method``, or a tuple of which any one will do.

    Implied scopes satisfy it (see ``registry.scopes``).
    """
    scopes = getattr(view, "required_scopes", None)
    if scopes:
        return scopes.get(method, scopes.get("*"))
    return getattr(view, "required_scope", None)


class ApiKeyWriteThrottle(throttling.SimpleRateThrottle):
    """Rate-limits writes (POST/PUT/PATCH/DELETE) per API key; reads are never throttled.

    The rate is ``API_WRITE_THROTTLE_RATE``, counted in a fixed window
    (``berrys_portal.ratelimit``: one Redis round trip per write, whatever the rate,
    instead of DRF's list of timestamps). Counters live in the cache; if the cache is
    down the request is let through (throttling is protection, not a dependency that
    may take the API down).
    """

    scope = "write"

    def get_rate(self) -> str:
        # Read at request time (DRF caches THROTTLE_RATES at import), so the setting is honoured.
        return settings.API_WRITE_THROTTLE_RATE

    def allow_request(self, request, view) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        self._wait = None
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        try:
            hit = window_hit(key=key, period=self.duration)
        except Exception:  # noqa: BLE001 - a cache outage must not turn writes into 500s
            logger.warning("write throttle unavailable (cache down?); request allowed")
            return True
        if hit.count <= self.num_requests:
            return True
        self._wait = hit.seconds_left
        return False

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)

    def get_cache_key(self, request, view) -> str | None:
        principal = request.user
        if isinstance(principal, ApiPrincipal):
            ident = f"key:{principal.key.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return f"throttle:{self.scope}:{ident}"
