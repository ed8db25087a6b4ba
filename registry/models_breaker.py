"""Where circuit-breaker state lives when there is no Redis: one row per service.

The embedded default (SQLite, no ``REDIS_URL``) runs the web server, the Celery
workers and beat as separate processes; keeping breaker state in process memory
would give each its own breaker. This table is the shared store instead.
``registry.breakers`` changes a row only with compare-and-set UPDATEs on
``version``, so each transition (and the one half-open trial) is made by exactly
one process.
"""

from __future__ import annotations

from django.db import models


class BreakerStore(models.Model):
    """The shared state of one service's breaker (the same fields as the Redis hash)."""

    # Keyed by service id, not a foreign key: like the Redis hash it may outlive or precede
    # the row, and it must not take part in the sweep's row locks on the services table.
    service_id = models.BigIntegerField(primary_key=True)
    state = models.CharField(max_length=10, default="closed")
    fails = models.PositiveIntegerField(default=0)
    opened_at = models.FloatField(null=True, blank=True, help_text="Unix time the breaker opened.")
    last_error = models.TextField(blank=True, default="")
    trial_token = models.CharField(max_length=32, blank=True, default="")
    trial_until = models.FloatField(default=0.0, help_text="Unix time the half-open trial lease ends.")
    version = models.BigIntegerField(default=0)

    class Meta:
        db_table = "registry_breaker_store"
        verbose_name = "breaker state (database store)"

    def __str__(self) -> str:
        return f"breaker of service {self.service_id}: {self.state}"
