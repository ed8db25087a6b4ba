"""The integration guide's typed errors."""

from __future__ import annotations

from typing import Any


class ServiceIntegrationError(Exception):
    """Base of every error this package raises."""


class ServiceNotFoundError(ServiceIntegrationError):
    """No instance of the type is registered, or none is eligible (all critical, in maintenance…)."""


class ServiceConnectionError(ServiceIntegrationError):
    """Every eligible instance failed: refused, timed out, or answered 5xx after the retries."""


class CircuitOpenError(ServiceConnectionError):
    """Every eligible instance's circuit breaker is open: no call was made."""


class ServiceResponseError(ServiceIntegrationError):
    """The service answered with a client error (4xx): a retry would not help."""

    def __init__(self, message: str, *, status: int, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
