"""The gateway: ``/gateway/{service_type}/{path}`` forwards a call to an eligible instance.

It lets the Web Dashboard reach the core services through the portal, so every
such call gets discovery, the request adapters (the chat-bug fix), the service's
circuit breaker and retries — the ServiceClient retries idempotent methods
only, so a POST is never sent twice. Needs a key with the ``gateway`` scope,
and only the types and methods on the key's ``gateway_allow`` list (403 naming
what is missing).

Answers: the service's own status and body (errors included, so callers see
what the service said); portal-side failures in the API's one error shape —
404 unknown type, 503 no eligible instance or circuit open, 502 unreachable,
502 for an answer the portal does not pass on (a redirect — never followed —,
1xx/101, 304, or a body over ``GATEWAY_MAX_BODY_BYTES``).

Bounded so that saturating it never takes the registry API down: every call has
the ServiceClient's total deadline and body cap, and each web process runs at
most ``GATEWAY_MAX_CONCURRENT`` gateway calls at once, at most
``GATEWAY_MAX_CONCURRENT_PER_KEY`` per API key and
``GATEWAY_MAX_CONCURRENT_PER_TARGET`` per service type; beyond them the answer is
503 with ``Retry-After`` at once (nothing waits). The process keeps its other
threads (gunicorn ``threads``, more than ``GATEWAY_MAX_CONCURRENT``) for the rest
of the API. The bounds are per process on purpose: what they protect — the
process's threads — is per process, and counting needs no round trip.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from berrys_portal.errors import Forbidden, InvalidInput, PortalError, ServiceResponseError
from registry.client import service_client
from registry.paths import gateway_path_check
from registry.scopes import gateway_allows
from registry.types import TYPE_PATTERN

FORWARDED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class GatewayAnswer:
    status: int
    body: Any
    service_name: str


class GatewayBusy(PortalError):
    """Too many gateway calls in flight; try again shortly."""

    status_code = 503
    code = "gateway_busy"


_slots_lock = threading.Lock()
_in_flight: Counter = Counter()


@contextmanager
def gateway_slot(*, key_id: Any, service_type: str) -> Iterator[None]:
    """Take a slot for one call, or raise GatewayBusy naming the bound that is full."""
    names = [("all", None, settings.GATEWAY_MAX_CONCURRENT, "GATEWAY_MAX_CONCURRENT"),
             ("key", key_id, settings.GATEWAY_MAX_CONCURRENT_PER_KEY, "GATEWAY_MAX_CONCURRENT_PER_KEY"),
             ("target", service_type, settings.GATEWAY_MAX_CONCURRENT_PER_TARGET,
              "GATEWAY_MAX_CONCURRENT_PER_TARGET")]
    with _slots_lock:
        for kind, value, bound, setting in names:
            if _in_flight[(kind, value)] >= bound:
                raise GatewayBusy(f"Too many gateway calls in flight ({setting}={bound}); retry shortly.")
        for kind, value, _, _ in names:
            _in_flight[(kind, value)] += 1
    try:
        yield
    finally:
        with _slots_lock:
            for kind, value, _, _ in names:
                _in_flight[(kind, value)] -= 1
                if not _in_flight[(kind, value)]:
                    del _in_flight[(kind, value)]


def gateway_forward(
    *, service_type: str, method: str, path: str, data: Any = None, params: dict | None = None
) -> GatewayAnswer:
    """Send one call to ``service_type`` through the ServiceClient; a service's error is an answer too."""
    service_type = service_type.upper()
    if not TYPE_PATTERN.match(service_type):
        raise InvalidInput(f"{service_type!r} is not a service type (UPPER_SNAKE_CASE, e.g. PLANNING_SYSTEM)")
    endpoint = "/" + path.lstrip("/")
    outcome = service_client.call(
        method, service=service_type, endpoint=endpoint, data=data, params=params or None,
        max_body=settings.GATEWAY_MAX_BODY_BYTES,
    )
    error = outcome.error
    if isinstance(error, ServiceResponseError):
        return GatewayAnswer(status=error.status, body=error.body,
                             service_name=outcome.call.service_name if outcome.call else "")
    if error is not None:
        raise error
    result = outcome.result
    return GatewayAnswer(status=result.status, body=result.body, service_name=result.service.name)


_ERRORS = {
    400: OpenApiResponse(description="Not a valid service type."),
    403: OpenApiResponse(description="No `gateway` scope, or the key's allow-list lacks this type and method."),
    404: OpenApiResponse(description="No service of this type is registered."),
    502: OpenApiResponse(description="The instance could not be reached."),
    503: OpenApiResponse(description="No eligible instance, its circuit breaker is open, or too many "
                         "gateway calls are in flight (with Retry-After)."),
}


@extend_schema(
    tags=["gateway"],
    parameters=[
        OpenApiParameter("service_type", str, OpenApiParameter.PATH, description="e.g. PROJECT_COORDINATOR"),
        OpenApiParameter("path", str, OpenApiParameter.PATH, description="Path on the service, e.g. projects/1"),
    ],
    request=OpenApiTypes.OBJECT,
    responses={200: OpenApiTypes.ANY, **_ERRORS},
    description="Forward the call to an eligible instance of the service type; the answer is the service's.",
)
class GatewayView(APIView):
    required_scope = "gateway"
    http_method_names = [m.lower() for m in FORWARDED_METHODS]

    def _forward(self, request: Request, service_type: str, path: str) -> Response:
        gateway_path_check(path)  # registry/paths.py: no '.'/'..' segment in any encoding
        key = request.user.key
        if not gateway_allows(key, service_type=service_type.upper(), method=request.method):
            raise Forbidden(
                f"This API key's gateway allow-list does not include {service_type.upper()}:{request.method} "
                f"(it allows: {', '.join(key.gateway_allow) or 'nothing'})."
            )
        data = request.data if request.method in ("POST", "PUT", "PATCH") else None
        params = {key: request.query_params.getlist(key) for key in request.query_params}
        key_id = getattr(request.auth, "pk", None)
        try:
            with gateway_slot(key_id=key_id, service_type=service_type.upper()):
                answer = gateway_forward(service_type=service_type, method=request.method, path=path,
                                         data=data, params=params)
        except GatewayBusy as exc:
            return Response(exc.as_dict(), status=exc.status_code,
                            headers={"Retry-After": str(settings.GATEWAY_RETRY_AFTER_SECONDS)})
        headers = {"X-Upstream-Service": answer.service_name} if answer.service_name else None
        return Response(answer.body, status=answer.status, headers=headers)

    def get(self, request: Request, service_type: str, path: str) -> Response:
        return self._forward(request, service_type, path)

    post = put = patch = delete = get
