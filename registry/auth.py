"""API-key authentication and scope permissions for the REST API.

Keys look like ``bp_<random>``; only their SHA-256 is stored (keys are 32
random bytes, so a slow hash adds nothing). Views declare the scope they need
with ``required_scopes = {"GET": "read", "POST": "register", ...}`` or a single
``required_scope``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from registry.models import ApiKey

KEY_PREFIX = "bp_"


def hash_key(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def api_key_create(
    *, name: str, scopes: list[str], expires_at: datetime | None = None, created_by=None
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plain key (shown once, never stored)."""
    valid = set(ApiKey.Scope.values)
    unknown = sorted(set(scopes) - valid)
    if unknown:
        raise ValueError(f"Unknown scope(s): {', '.join(unknown)}. Valid: {', '.join(sorted(valid))}")
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        name=name,
        prefix=plain[:10],
        key_hash=hash_key(plain),
        scopes=sorted(set(scopes)),
        expires_at=expires_at,
        created_by=created_by,
    )
    return key, plain


@dataclass(frozen=True)
class ApiPrincipal:
    """The authenticated caller: DRF's ``request.user`` for API calls."""

    key: ApiKey

    is_authenticated = True
    is_anonymous = False

    @property
    def username(self) -> str:
        return f"apikey:{self.key.name}"

    def has_scope(self, scope: str) -> bool:
        return scope in self.key.scopes


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Token <key>`` or ``Authorization: Bearer <key>``."""

    keywords = ("token", "bearer")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if parts[0].lower() not in self.keywords:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: use 'Token <key>'.")
        key = ApiKey.objects.filter(key_hash=hash_key(parts[1])).first()
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("API key has been revoked.")
        if key.expires_at is not None and key.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed("API key has expired.")
        return ApiPrincipal(key), key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) when credentials are missing.
        return 'Token realm="berrys-portal"'


class HasApiKey(permissions.BasePermission):
    """Requires a valid key, and the scope the view declares for this method."""

    message = "This endpoint needs an API key with the right scope."

    def has_permission(self, request, view) -> bool:
        principal = request.user
        if not isinstance(principal, ApiPrincipal):
            raise exceptions.NotAuthenticated("Authentication credentials were not provided.")
        scope = required_scope(view, request.method)
        if scope and not principal.has_scope(scope):
            raise exceptions.PermissionDenied(f"This API key lacks the '{scope}' scope.")
        return True


def required_scope(view, method: str) -> str | None:
    scopes = getattr(view, "required_scopes", None)
    if scopes:
        return scopes.get(method, scopes.get("*"))
    return getattr(view, "required_scope", None)
