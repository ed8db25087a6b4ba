"""Operator permissions. No tables: the model only carries the permission rows.

``dashboard.operate_run``: retry, rerun, cancel runs and answer human steps.
``dashboard.operate_service``: reset or open circuit breakers and other service
actions. Operators hold both; Viewers neither (see ``berrys_portal.roles``).
"""

from __future__ import annotations

from django.db import models


class Operations(models.Model):
    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("operate_run", "Can retry, rerun and cancel runs and answer human steps"),
            ("operate_service", "Can reset circuit breakers and run service actions"),
        ]

    def __str__(self) -> str:
        return "operations"
