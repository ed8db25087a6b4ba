"""Shared pieces of the integration guide's workflows (not a definition: autodiscovery skips ``_`` modules)."""

from __future__ import annotations

from workflows.definitions import RetryPolicy

# Calls to the Berrys services: a few quick retries for transient failures. Each try
# also counts toward the service's circuit breaker, so a dead service stops being
# called after its breaker's fail_max and the step takes its fallback or fails fast.
BERRYS_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.5, backoff=2.0, max_delay=5.0)
BERRYS_TIMEOUT = 5.0
