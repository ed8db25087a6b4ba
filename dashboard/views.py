"""/metrics (Prometheus text format) and /registry/prometheus-sd (Prometheus HTTP SD)."""

from __future__ import annotations

import ipaddress
import logging
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from berrys_portal import metrics
from berrys_portal.query import query_params_read
from dashboard.metrics import metrics_render
from registry.auth import ApiKeyAuthentication, ApiPrincipal
from registry.models import Service
from registry.serializers import ErrorSerializer

logger = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def client_ip_allowed(remote_addr: str) -> bool:
    """Is the peer inside METRICS_ALLOWED_NETWORKS? (REMOTE_ADDR only: a client
    cannot forge its way in with X-Forwarded-For.)"""
    nets = _networks(tuple(settings.METRICS_ALLOWED_NETWORKS))
    if not nets or not remote_addr:
        return False
    try:
        addr = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    return any(addr in net for net in nets)


def _error(status: int, detail: str, code: str) -> JsonResponse:
    response = JsonResponse({"detail": detail, "code": code}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Token realm="berrys-portal"'
    return response


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus scrape endpoint: a key with scope ``metrics``, or an allow-listed network."""
    if not client_ip_allowed(request.META.get("REMOTE_ADDR", "")):
        try:
            found = ApiKeyAuthentication().authenticate(request)
        except exceptions.AuthenticationFailed as exc:
            return _error(401, str(exc.detail), "authentication_failed")
        if found is None:
            return _error(401, "Authentication credentials were not provided.", "not_authenticated")
        principal: ApiPrincipal = found[0]
        if not principal.has_scope("metrics"):
            return _error(403, "This API key lacks the 'metrics' scope.", "permission_denied")
    return HttpResponse(metrics_render(), content_type=metrics.CONTENT_TYPE)


def _target(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


def prometheus_sd_targets() -> list[dict]:
    """One target group per registered service (its labels differ per instance)."""
    groups = []
    for svc in Service.objects.only("name", "type", "status", "url", "metadata").order_by("type", "name"):
        target = _target(svc.url)
        if target is None:
            continue
        version = svc.metadata.get("version") if isinstance(svc.metadata, dict) else None
        groups.append(
            {
                "targets": [target],
                "labels": {
                    "name": svc.name,
                    "type": svc.type,
                    "status": svc.status,
                    "version": str(version) if version is not None else "",
                },
            }
        )
    return groups


_SD_GROUP = inline_serializer(
    "PrometheusTargetGroup",
    fields={
        "targets": serializers.ListField(child=serializers.CharField()),
        "labels": serializers.DictField(child=serializers.CharField()),
    },
    many=True,
)


class PrometheusSdView(APIView):
    """Prometheus HTTP service discovery: every registered service as a scrape target."""

    required_scopes = {"GET": "metrics"}

    @extend_schema(
        operation_id="registry_prometheus_sd",
        summary="Prometheus HTTP service-discovery targets",
        description=(
            "A JSON list of target groups, one per registered service: "
            '`[{"targets": ["host:port"], "labels": {"name", "type", "status", "version"}}]`. '
            "Point Prometheus' `http_sd_configs` here with a `metrics` key."
        ),
        responses={200: OpenApiResponse(_SD_GROUP),
                   400: OpenApiResponse(ErrorSerializer, description="An unknown query parameter.")},
    )
    def get(self, request: Request) -> Response:
        query_params_read(request, allowed=())
        return Response(prometheus_sd_targets())
