"""One exception hierarchy and one error shape for the whole API.

Every error the API returns looks like::

    {"detail": "human sentence", "code": "machine_code", "errors": {"field": ["message"]}}

``errors`` appears only for validation problems. Domain code raises
``PortalError`` subclasses; ``api_exception_handler`` turns them (and DRF's and
Django's own exceptions) into that shape.
"""

from __future__ import annotations

import logging
from typing import Any

import pybreaker
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.views import defaults as django_defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_default_handler

logger = logging.getLogger(__name__)


class PortalError(Exception):
    """Base of every error the portal raises on purpose."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    code = "portal_error"

    def __init__(self, message: str = "", *, errors: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message or self.__class__.__doc__ or self.code
        self.errors = errors

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


class InvalidInput(PortalError):
    """The request is not valid."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"


class NotFound(PortalError):
    """Not found."""

    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Forbidden(PortalError):
    """This caller may not do this (not the owner, or outside the key's limits)."""

    status_code = status.HTTP_403_FORBIDDEN
    code = "permission_denied"


class QuotaExceeded(Forbidden):
    """The API key reached one of its limits; the message names the limit."""

    code = "quota_exceeded"


class Conflict(PortalError):
    """The request conflicts with the current state."""

    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class ServiceNotFoundError(NotFound):
    """No registered instance of the requested service type."""

    code = "service_not_found"


class NoEligibleServiceError(PortalError):
    """Instances are registered but none may receive traffic."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "no_eligible_service"


class ServiceConnectionError(PortalError):
    """The service could not be reached (connection refused, timeout)."""

    status_code = status.HTTP_502_BAD_GATEWAY
    code = "service_connection_error"


class CircuitOpenError(PortalError, pybreaker.CircuitBreakerError):
    """The service's circuit breaker is open; the call was not sent."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "circuit_open"


class ServiceResponseError(PortalError):
    """The service answered with an error status."""

    status_code = status.HTTP_502_BAD_GATEWAY
    code = "service_response_error"

    def __init__(self, message: str = "", *, status: int, body: Any = None):
        super().__init__(message or f"Service answered HTTP {status}")
        self.status = status
        self.body = body


class WorkflowError(PortalError):
    """A workflow could not continue."""

    status_code = status.HTTP_409_CONFLICT
    code = "workflow_error"

    def __str__(self) -> str:  # the guide's wording: "WorkflowError: Service not found: …"
        return self.message


def _flatten_drf_detail(detail: Any) -> dict[str, list[str]] | None:
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            if isinstance(value, list | tuple):
                msgs: list[str] = []
                for item in value:
                    if isinstance(item, dict):
                        nested = _flatten_drf_detail(item) or {}
                        msgs.extend(f"{k}: {'; '.join(v)}" for k, v in nested.items())
                    else:
                        msgs.append(str(item))
                out[str(key)] = msgs
            elif isinstance(value, dict):
                nested = _flatten_drf_detail(value) or {}
                for sub, msgs in nested.items():
                    out[f"{key}.{sub}"] = msgs
            else:
                out[str(key)] = [str(value)]
        return out
    if isinstance(detail, list):
        return {"non_field_errors": [str(item) for item in detail]}
    return None


def _summary(errors: dict[str, list[str]]) -> str:
    parts = []
    for field, msgs in errors.items():
        label = "" if field == "non_field_errors" else f"{field}: "
        parts.append(label + " ".join(msgs))
    return "Invalid input. " + "; ".join(parts)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error in the one shape."""
    if isinstance(exc, PortalError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()

    response = drf_default_handler(exc, context)
    if response is None:
        logger.exception("Unhandled API error", exc_info=exc)
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        errors = _flatten_drf_detail(exc.detail) or {"non_field_errors": [str(exc.detail)]}
        response.data = {"detail": _summary(errors), "code": "invalid", "errors": errors}
    elif isinstance(exc, drf_exceptions.APIException):
        detail = exc.detail
        if isinstance(detail, dict | list):
            errors = _flatten_drf_detail(detail) or {}
            response.data = {"detail": _summary(errors), "code": exc.default_code, "errors": errors}
        else:
            response.data = {"detail": str(detail), "code": getattr(detail, "code", exc.default_code)}
    return response


def _is_html_path(request) -> bool:
    return request.path.startswith(("/admin/", "/static/"))


def json_page_not_found(request, exception=None):
    """``handler404``: the API's error shape for unknown API paths; Django's page for the admin."""
    if _is_html_path(request):
        return django_defaults.page_not_found(request, exception)
    return JsonResponse({"detail": f"No endpoint at {request.path}.", "code": "not_found"}, status=404)


def json_bad_request(request, exception=None):
    """``handler400``: Django's own refusals (too many query parameters, a disallowed Host, other
    ``SuspiciousOperation``s) in the API's error shape; Django's page for the admin."""
    if _is_html_path(request):
        return django_defaults.bad_request(request, exception)
    detail = str(exception) if exception is not None and str(exception) else "Bad request."
    return JsonResponse({"detail": detail, "code": "bad_request"}, status=400)


def json_server_error(request):
    """``handler500``: a crash still answers in the API's error shape (details are in the log)."""
    if _is_html_path(request):
        return django_defaults.server_error(request)
    return JsonResponse({"detail": "Internal server error.", "code": "server_error"}, status=500)
