"""Registry, discovery and portal-health endpoints. Thin: validate, call a service, serialize."""

from __future__ import annotations

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import generics, permissions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from berrys_portal.errors import InvalidInput, NotFound, PortalError
from berrys_portal.pagination import PortalPagination
from berrys_portal.query import query_params_read, query_params_validate
from registry import services
from registry.discovery import service_eligible_queryset, service_none_eligible, service_pick
from registry.filters import service_filter
from registry.models import ApiKey, Service
from registry.portal_health import portal_health
from registry.register_input import register_data_fast
from registry.serializers import (
    DiscoveryListSerializer,
    ErrorSerializer,
    MaintenanceSerializer,
    PortalHealthSerializer,
    ServiceListQuerySerializer,
    ServiceRegisterSerializer,
    ServiceSerializer,
    ServiceUpdateSerializer,
)
from registry.types import TYPE_PATTERN
from registry.watch import INDEX_HEADER, watch_params, watch_sync

_WATCH_PARAMS = [
    OpenApiParameter("index", int, description=(
        "Blocking watch: the X-Registry-Index of your previous answer. The answer waits until the "
        "registry changes past it (or `wait` ends). 0 or absent: answer at once.")),
    OpenApiParameter("wait", str, description=(
        "How long a watch waits: a duration such as 30s or 5m (default 5m, at most 10m, "
        "plus up to 1/16 random jitter).")),
]
_INDEX_HEADER = OpenApiParameter(INDEX_HEADER, int, OpenApiParameter.HEADER, response=True,
                                 description="The registry index this answer reflects (pass it as `index`).")

_ERROR_TEXT = {
    400: "Invalid input: `detail` summarises, `errors` names each field (unknown query parameters too).",
    401: "Missing, malformed, unknown, revoked or expired API key.",
    403: "The API key lacks the scope this endpoint needs, or (writes) the service belongs to another key, "
         "or the key's type/name limits or quotas refuse it (`code`: quota_exceeded).",
    409: "A registration or PATCH would change the service's type.",
    404: "Not found.",
    413: "Request body larger than API_MAX_BODY_BYTES.",
    429: "Too many writes for this API key (API_WRITE_THROTTLE_RATE).",
    503: "Instances are registered but none is eligible; `detail` lists their states.",
}


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorSerializer, description=_ERROR_TEXT[code]) for code in codes}


_READ_ERRORS = (401, 403)
_WRITE_ERRORS = (400, 401, 403, 409, 413, 429)


_PK = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The service's id.")


def _service_or_404(pk: int) -> Service:
    service = Service.objects.filter(pk=pk).first()
    if service is None:
        raise NotFound(f"No registered service with id {pk}.")
    return service


def _actor(request) -> str:
    return getattr(request.user, "username", "")


def _key(request) -> ApiKey:
    return request.user.key


class ServiceCollectionView(generics.GenericAPIView):
    """``/registry/services``: register (POST) and list (GET)."""

    required_scopes = {"GET": "registry:read", "POST": "registry:write"}
    pagination_class = PortalPagination
    serializer_class = ServiceSerializer

    @extend_schema(
        operation_id="services_list",
        summary="List registered services",
        parameters=[
            OpenApiParameter("type", str, description="Exact type, e.g. PLANNING_SYSTEM."),
            OpenApiParameter("status", str, enum=[c for c, _ in Service._meta.get_field("status").choices]),
            OpenApiParameter("name", str, description="Case-insensitive substring of the name."),
            OpenApiParameter("tag", str, many=True, description="Repeat to require several tags (ANDed)."),
            OpenApiParameter("capability", str, many=True, description="Repeat to require several (ANDed)."),
            *_WATCH_PARAMS,
            _INDEX_HEADER,
        ],
        responses={200: ServiceSerializer(many=True), **_errors(400, 404, *_READ_ERRORS)},
    )
    def get(self, request):
        filters = query_params_validate(request, serializer_class=ServiceListQuerySerializer,
                                        repeatable=("tag", "capability"))
        index = watch_sync(**_watch(filters.pop("index", None), filters.pop("wait", None)))
        queryset = service_filter(Service.objects.all(), **filters).order_by("type", "name", "id")
        page = self.paginate_queryset(queryset)
        response = self.get_paginated_response(ServiceSerializer(page, many=True).data)
        response[INDEX_HEADER] = str(index)
        return response

    @extend_schema(
        operation_id="services_register",
        summary="Register a service (idempotent upsert on name + url)",
        request=ServiceRegisterSerializer,
        responses={
            201: OpenApiResponse(ServiceSerializer, description="Registered for the first time."),
            200: OpenApiResponse(ServiceSerializer, description="Already registered: updated in place."),
            **_errors(*_WRITE_ERRORS),
        },
    )
    def post(self, request):
        # The usual body is checked in plain Python; anything else (and every 400) is the serializer's.
        data = register_data_fast(request.data)
        if data is None:
            serializer = ServiceRegisterSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
        service, created = services.service_register(data=data, key=_key(request))
        return Response(
            ServiceSerializer(service).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class ServiceDetailView(APIView):
    """``/registry/services/{id}``: read, change, deregister one instance."""

    required_scopes = {"GET": "registry:read", "PATCH": "registry:write", "DELETE": "registry:write"}

    @extend_schema(
        operation_id="services_retrieve", parameters=[_PK], summary="One registered service",
        responses={200: ServiceSerializer, **_errors(400, 404, *_READ_ERRORS)},
    )
    def get(self, request, pk: str):
        query_params_read(request, allowed=())
        return Response(ServiceSerializer(_service_or_404(int(pk))).data)

    @extend_schema(
        operation_id="services_update", parameters=[_PK], summary="Change a service's optional fields",
        request=ServiceUpdateSerializer,
        responses={200: ServiceSerializer, **_errors(404, *_WRITE_ERRORS)},
    )
    def patch(self, request, pk: str):
        service = _service_or_404(int(pk))
        data = ServiceUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        service = services.service_update(service=service, data=data.validated_data, key=_key(request))
        return Response(ServiceSerializer(service).data)

    @extend_schema(
        operation_id="services_deregister", parameters=[_PK], summary="Deregister a service",
        responses={204: OpenApiResponse(description="Deregistered."), **_errors(404, 401, 403, 429)},
    )
    def delete(self, request, pk: str):
        if not services.service_deregister(service=int(pk), actor=_actor(request), reason="API request",
                                            key=_key(request)):
            raise NotFound(f"No registered service with id {pk}.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class ServiceHeartbeatView(APIView):
    """``PUT /registry/services/{id}/heartbeat``."""

    required_scopes = {"PUT": "registry:write"}

    @extend_schema(
        operation_id="services_heartbeat", parameters=[_PK], summary="Record a heartbeat", request=None,
        responses={200: ServiceSerializer, **_errors(404, 401, 403, 413, 429)},
    )
    def put(self, request, pk: str):
        # service_heartbeat answers the 404 itself: no read before it.
        return Response(ServiceSerializer(services.service_heartbeat(service=int(pk), key=_key(request))).data)


class ServiceMaintenanceView(APIView):
    """``POST /registry/services/{id}/maintenance`` with ``{"enabled": bool, "reason": str}``."""

    required_scopes = {"POST": "registry:write"}

    @extend_schema(
        operation_id="services_maintenance", parameters=[_PK], summary="Enter or leave maintenance",
        request=MaintenanceSerializer,
        responses={200: ServiceSerializer, **_errors(404, *_WRITE_ERRORS)},
    )
    def post(self, request, pk: str):
        _service_or_404(int(pk))
        data = MaintenanceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        service = services.service_set_maintenance(
            service=int(pk), on=data.validated_data["enabled"], reason=data.validated_data["reason"],
            actor=_actor(request), key=_key(request),
        )
        return Response(ServiceSerializer(service).data)


def _watch(index: str | None, wait: str | None, service_type: str | None = None) -> dict:
    index_value, wait_value = watch_params(index, wait)
    return {"index": index_value, "wait": wait_value, "service_type": service_type}


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class DiscoveryView(APIView):
    """``GET /discovery/{type}``: one eligible instance (rotating), or all with ``?all=1``."""

    required_scopes = {"GET": "registry:read"}
    prepared: bool | None = None  # the pick as a prepared statement (None: the setting); bench/urls.py

    @extend_schema(
        operation_id="discovery_get",
        summary="Discover an instance of a service type",
        parameters=[
            OpenApiParameter("service_type", str, OpenApiParameter.PATH, description="e.g. PLANNING_SYSTEM"),
            OpenApiParameter("all", bool, description="List every eligible instance instead of one (paged)."),
            OpenApiParameter("page", int, description="With all=1: the page, from 1."),
            OpenApiParameter("page_size", int, description="With all=1: instances per page (default 50, at most 500)."),
            *_WATCH_PARAMS,
            _INDEX_HEADER,
        ],
        responses={
            200: PolymorphicProxySerializer(
                component_name="DiscoveryResult",
                serializers=[ServiceSerializer, DiscoveryListSerializer],
                resource_type_field_name=None,
            ),
            **_errors(400, 404, 503, *_READ_ERRORS),
        },
    )
    def get(self, request, service_type: str):
        if not TYPE_PATTERN.match(service_type) or len(service_type) > 64:
            raise InvalidInput(
                "Type must be UPPER_SNAKE_CASE, e.g. PLANNING_SYSTEM.",
                errors={"type": ["Type must be UPPER_SNAKE_CASE, e.g. PLANNING_SYSTEM."]},
            )
        params = query_params_read(request, allowed=("all", "page", "page_size", "index", "wait"))
        flag = str(params.get("all", "")).strip().lower()
        if flag not in _TRUE | _FALSE:
            raise InvalidInput("all must be 1/0 or true/false.", errors={"all": ["Must be 1/0 or true/false."]})
        # The single pick is the hot path (one query): it answers the index only when watched.
        watched = flag in _TRUE or "index" in params or "wait" in params
        index = watch_sync(**_watch(params.get("index"), params.get("wait"), service_type)) if watched else None
        try:
            if flag in _TRUE:
                response = self._all(request, service_type)
            else:
                response = Response(ServiceSerializer(service_pick(service_type=service_type,
                                                                    prepared=self.prepared)).data)
        except PortalError as exc:  # a watcher needs the index on the 404 / 503 too
            if index is None:
                raise
            response = Response(exc.as_dict(), status=exc.status_code)
        if index is not None:
            response[INDEX_HEADER] = str(index)
        return response

    def _all(self, request, service_type: str) -> Response:
        """Every eligible instance, best first, a page at a time (``page``, ``page_size``)."""
        paginator = PortalPagination()
        page = paginator.paginate_queryset(service_eligible_queryset(service_type=service_type), request, view=self)
        count = paginator.page.paginator.count
        if not count:
            raise service_none_eligible(service_type=service_type)
        return Response({"type": service_type, "count": count, "next": paginator.get_next_link(),
                         "previous": paginator.get_previous_link(),
                         "services": ServiceSerializer(page, many=True).data})


class PortalHealthView(APIView):
    """``GET /health``: the portal's own health, no key needed (load balancers poll it)."""

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]
    throttle_classes: list = []

    @extend_schema(
        operation_id="portal_health", summary="The portal's own health", auth=[],
        responses={
            200: OpenApiResponse(PortalHealthSerializer, description="Healthy."),
            503: OpenApiResponse(PortalHealthSerializer, description="A dependency does not answer."),
        },
    )
    def get(self, request):
        body = portal_health()
        code = status.HTTP_200_OK if body["status"] == "healthy" else status.HTTP_503_SERVICE_UNAVAILABLE
        return Response(body, status=code)
