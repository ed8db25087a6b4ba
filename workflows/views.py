"""The workflow API: start, list, inspect, retry, cancel and signal runs; list definitions.

Thin views: validate input with a serializer, call ``workflows.engine`` /
``workflows.services``, serialize the result. Starting and acting need the
``workflows`` scope, reading ``runs:read``; a key sees and acts on the runs it
started, unless it has ``runs:read:all`` (read) or ``workflows:operate`` (act).
Another key's run is a 404, like a run that does not exist.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from urllib import parse

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from berrys_portal.errors import InvalidInput, NotFound
from berrys_portal.query import query_params_read, query_params_validate
from registry.serializers import ErrorSerializer
from workflows import definitions, services
from workflows.models import StepAttempt, StepRun, WorkflowRun
from workflows.serializers import (
    DefinitionOut,
    EmptyInput,
    RunDetailOut,
    RunListQuery,
    RunOut,
    RunRetryInput,
    RunSignalInput,
    RunStartInput,
)

SCOPES = {"GET": "runs:read", "POST": "workflows"}
_ERROR_TEXT = {
    400: "Invalid input: `detail` summarises, `errors` names each field (unknown fields too).",
    401: "Missing, malformed, unknown, revoked or expired API key.",
    403: "The API key lacks the scope this endpoint needs (`runs:read` or `workflows`).",
    404: "No such run, or a run another API key started.",
    409: "The run is not in a state that allows this action; `detail` says why.",
    413: "Request body larger than API_MAX_BODY_BYTES.",
    429: "Too many writes for this API key.",
}


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorSerializer, description=_ERROR_TEXT[code]) for code in codes}


READ_ERRORS = (400, 401, 403)
ACTION_ERRORS = (400, 401, 403, 404, 409, 413, 429)
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="The same key and workflow return the same run (200) instead of starting another.",
)


class RunCursorPagination(CursorPagination):
    """Newest first, no COUNT(*): the runs table is expected to hold millions of rows."""

    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request):
        """DRF's decoding, made strict: anything but a cursor this class wrote is a 400 naming it.

        DRF's own decoder skips characters outside base64 (``!!!`` read as no
        cursor: page one, silently), answers 404, and passes any position through
        to the query (``cD14`` is ``p=x``: a 500 from the datetime lookup).
        """
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        try:
            text = b64decode(encoded.encode("ascii"), validate=True).decode("ascii")
            tokens = parse.parse_qs(text, keep_blank_values=True, strict_parsing=True)
            if not tokens or set(tokens) - {"o", "r", "p"} or any(len(v) != 1 for v in tokens.values()):
                raise ValueError(text)
            offset = int(tokens.get("o", ["0"])[0])
            reverse = tokens.get("r", ["0"])[0]
            position = tokens.get("p", [None])[0]
            if offset < 0 or reverse not in ("0", "1"):
                raise ValueError(text)
            offset = min(offset, self.offset_cutoff)  # as DRF does
            if position is not None:
                _position_check(position)
        except (ValueError, UnicodeError, binascii.Error, DjangoValidationError):
            msg = "Invalid cursor: pass back the `next` or `previous` link of an earlier page."
            raise InvalidInput(msg, errors={"cursor": [msg]}) from None
        return Cursor(offset=offset, reverse=reverse == "1", position=position)


def _position_check(position: str) -> None:
    """The position is the first ordering field (created_at) of a row: an aware datetime."""
    value = WorkflowRun._meta.get_field("created_at").to_python(position)
    if value is None or value.tzinfo is None:
        raise ValueError(position)


class RunPageOut(serializers.Serializer):
    """One page of runs (cursor pagination: follow `next` / `previous`)."""

    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = RunOut(many=True)


def _actor(request: Request) -> str:
    return getattr(request.user, "username", "") or "api"


def _key(request: Request):
    return request.user.key


def _detail(run_id, key) -> WorkflowRun:
    attempts = Prefetch("attempts", queryset=StepAttempt.objects.order_by("number"))
    steps = Prefetch("steps", queryset=StepRun.objects.order_by("index").prefetch_related(attempts))
    runs = services.run_visible_to(WorkflowRun.objects.all(), key=key)
    try:
        return runs.prefetch_related(steps, "events").get(pk=run_id)
    except (WorkflowRun.DoesNotExist, ValueError, DjangoValidationError):
        raise NotFound(f"Workflow run {run_id} not found") from None


class RunListView(APIView):
    required_scopes = SCOPES

    @extend_schema(
        operation_id="workflow_runs_list",
        parameters=[RunListQuery, OpenApiParameter("cursor", OpenApiTypes.STR, description="Page cursor.")],
        responses={200: RunPageOut, **_errors(*READ_ERRORS)},
        summary="List runs, newest first (cursor-paginated).",
    )
    def get(self, request: Request) -> Response:
        filters = query_params_validate(request, serializer_class=RunListQuery)
        runs = services.run_visible_to(WorkflowRun.objects.all(), key=_key(request))
        if "workflow" in filters:
            runs = runs.filter(workflow=filters["workflow"])
        if "status" in filters:
            runs = runs.filter(status=filters["status"])
        if "created_after" in filters:
            runs = runs.filter(created_at__gte=filters["created_after"])
        if "created_before" in filters:
            runs = runs.filter(created_at__lt=filters["created_before"])
        paginator = RunCursorPagination()
        page = paginator.paginate_queryset(runs, request, view=self)
        return paginator.get_paginated_response(RunOut(page, many=True).data)

    @extend_schema(
        operation_id="workflow_runs_start",
        request=RunStartInput,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: OpenApiResponse(RunDetailOut, description="A new run was started."),
            200: OpenApiResponse(RunDetailOut, description="This Idempotency-Key already started this run."),
            **_errors(400, 401, 403, 413, 429),
            409: OpenApiResponse(ErrorSerializer, description=(
                "The workflow refuses starts while blocked (`when_blocked: refuse`) and a required "
                "service is unavailable; `detail` names it. See GET /workflows/readiness.")),
        },
        summary="Start a run (or return the run an Idempotency-Key already started).",
    )
    def post(self, request: Request) -> Response:
        data = RunStartInput(data=request.data)
        data.is_valid(raise_exception=True)
        run, created = services.run_start_checked(
            workflow=data.validated_data["workflow"], input=data.validated_data["input"],
            idempotency_key=request.headers.get("Idempotency-Key") or None,
            triggered_by=_actor(request), owner_key=_key(request),
        )
        return Response(RunDetailOut(_detail(run.pk, _key(request))).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class RunDetailView(APIView):
    required_scopes = SCOPES

    @extend_schema(operation_id="workflow_runs_retrieve", responses={200: RunDetailOut, **_errors(400, 401, 403, 404)},
                   summary="A run with its steps, their attempts, and its events.")
    def get(self, request: Request, run_id) -> Response:
        query_params_read(request, allowed=())
        return Response(RunDetailOut(_detail(run_id, _key(request))).data)


class RunRetryView(APIView):
    required_scopes = SCOPES

    @extend_schema(operation_id="workflow_runs_retry", request=RunRetryInput,
                   responses={200: RunDetailOut, **_errors(*ACTION_ERRORS)},
                   summary="Retry from the failed step, or rerun from from_step, optionally with new input.")
    def post(self, request: Request, run_id) -> Response:
        data = RunRetryInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.run_retry(run_id=run_id, actor=_actor(request), key=_key(request), **data.validated_data)
        return Response(RunDetailOut(_detail(run_id, _key(request))).data)


class RunCancelView(APIView):
    required_scopes = SCOPES

    @extend_schema(operation_id="workflow_runs_cancel", request=EmptyInput,
                   responses={200: RunDetailOut, **_errors(*ACTION_ERRORS)},
                   summary="Cancel a run: a running step may finish, nothing further runs.")
    def post(self, request: Request, run_id) -> Response:
        EmptyInput(data=request.data or {}).is_valid(raise_exception=True)
        services.run_cancel(run_id=run_id, actor=_actor(request), key=_key(request))
        return Response(RunDetailOut(_detail(run_id, _key(request))).data)


class RunSignalView(APIView):
    required_scopes = SCOPES

    @extend_schema(operation_id="workflow_runs_signal", request=RunSignalInput,
                   responses={200: RunDetailOut, **_errors(*ACTION_ERRORS)},
                   summary="Answer the run's waiting human step.")
    def post(self, request: Request, run_id) -> Response:
        data = RunSignalInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.run_answer(run_id=run_id, actor=_actor(request), key=_key(request), **data.validated_data)
        return Response(RunDetailOut(_detail(run_id, _key(request))).data)


class DefinitionListView(APIView):
    # Definitions say nothing about anyone's runs: registry readers may see them too.
    required_scopes = {"GET": ("runs:read", "registry:read")}
    pagination_class = None

    @extend_schema(operation_id="workflow_definitions_list", responses={200: DefinitionOut(many=True), **_errors(400, 401, 403)},
                   summary="Registered workflows (latest versions) with their steps and services.")
    def get(self, request: Request) -> Response:
        query_params_read(request, allowed=())
        return Response(DefinitionOut([wf.describe() for wf in definitions.all()], many=True).data)


class ReadinessOut(serializers.Serializer):
    workflow = serializers.CharField()
    version = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["ready", "degraded", "blocked"])
    when_blocked = serializers.ChoiceField(choices=["start", "refuse"])
    required = serializers.ListField(child=serializers.DictField())
    optional = serializers.ListField(child=serializers.DictField())
    blocked_by = serializers.ListField(child=serializers.CharField())
    degraded_by = serializers.ListField(child=serializers.CharField())


class ReadinessView(APIView):
    """``GET /workflows/readiness``: can each workflow start now, and if not, why."""

    required_scopes = {"GET": ("runs:read", "registry:read", "metrics")}
    pagination_class = None

    @extend_schema(
        operation_id="workflow_readiness", responses={200: ReadinessOut(many=True), **_errors(400, 401, 403)},
        summary="Each workflow: ready, degraded (an optional service down: which fallback runs) or "
                "blocked (a required one down: which, since when, breaker state).",
    )
    def get(self, request: Request) -> Response:
        query_params_read(request, allowed=())
        from workflows.readiness import readiness_all

        return Response(readiness_all())
