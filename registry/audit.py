"""The audit trail: key creation and revocation, ownership moves, approvals, quota refusals.

One function writes it, called by the service functions that make those changes,
so the API, the admin and the management commands all leave the same rows.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from registry.models import ApiKey, AuditEvent


def actor_of(*, key: ApiKey | None = None, user=None, default: str = "command") -> str:
    """How an actor is written in audit rows and run records: apikey:<name>, a username, or a command."""
    if key is not None:
        return f"apikey:{key.name}"
    if user is not None and getattr(user, "is_authenticated", False):
        return user.get_username()
    return default


def audit_record(*, action: str, actor: str, target: str, details: dict[str, Any] | None = None) -> AuditEvent:
    return AuditEvent.objects.create(
        at=timezone.now(), actor=actor[:200], action=action, target=target[:300], details=details or {}
    )
