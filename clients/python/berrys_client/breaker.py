"""A per-instance circuit breaker with the integration guide's presets.

Hand-written (a few lines) rather than pybreaker: pybreaker's async path needs
Tornado, and this package must work from any asyncio service with no other
dependency. Closed → open after ``failure_threshold`` failures in a row; open for
``recovery_timeout`` seconds; then one trial call (half-open) closes or reopens it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass
class CircuitBreaker:
    failure_threshold: int = 3
    recovery_timeout: float = 60.0
    timeout: float = 10.0  # seconds per call through this breaker
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    _trial: bool = field(default=False, repr=False)

    def allow(self) -> bool:
        """May a call go through now? (Taking the half-open trial if it is due.)"""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and time.monotonic() - self.opened_at >= self.recovery_timeout:
            self.state, self._trial = HALF_OPEN, True
            return True
        return False

    def succeeded(self) -> None:
        self.state, self.failures, self._trial = CLOSED, 0, False

    def failed(self) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.failure_threshold:
            self.state, self.opened_at, self._trial = OPEN, time.monotonic(), False


def critical_breaker() -> CircuitBreaker:
    """The guide's preset for critical services."""
    return CircuitBreaker(failure_threshold=5, recovery_timeout=30, timeout=5)


def non_critical_breaker() -> CircuitBreaker:
    """The guide's preset for non-critical services."""
    return CircuitBreaker(failure_threshold=3, recovery_timeout=60, timeout=10)
