"""Health and circuit-breaker parts of the Service admin (snapshots, uptime, charts, actions)."""

from __future__ import annotations


class HealthAdminMixin:
    """Mixed into ServiceAdmin; the health issue fills it in."""
