"""``/v1/``: the Consul-compatible read API (async views; blocking queries hold no thread on ASGI).

Plain Django async views, not DRF: DRF's views are sync, and a blocking query must
wait without a thread. They run under the WSGI server too (each then holds its
thread while it waits); ``Procfile``'s ``watch`` process serves them from uvicorn.

What is Consul's here: paths, query parameters (``dc``, ``index``, ``wait``,
``stale``, ``consistent``, ``token``, ``tag``, ``passing``), bodies, the
``X-Consul-*`` headers, 200 with ``[]`` for an unknown service, 400 for a bad
``index`` / ``wait`` / state, 405 for another method, 403 for a missing, unknown
or insufficient token. What is ours: error bodies are the portal's JSON error
shape (Consul sends plain text); a parameter Consul has but this subset does not
implement (``filter``, ``near``, ``ns``, ``cached``...) is refused with a 400
naming it rather than ignored; ``dc`` other than ours is a 400 (Consul: 500
"No path to datacenter"); bounds on open blocking queries (``WATCH_MAX_PER_KEY``
per API key: 429, ``WATCH_MAX_OPEN`` in all: 503, both with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from registry import consul
from registry.auth import _key_lookup, _touch_last_used, hash_key
from registry.scopes import key_has_scope
from registry.watch import (
    TooManyWatches,
    WatchServerFull,
    duration_parse,
    index_feed,
    index_parse,
    index_read,
    wait_timeout,
    watch_refusal,
    watch_slot,
)

READ_SCOPES = ("registry:read", "metrics")
_COMMON = {"dc", "index", "wait", "stale", "consistent", "token"}
_TRUE = {"", "1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


class _Refused(Exception):
    def __init__(self, status: int, detail: str, code: str, errors: dict | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.code, self.errors = status, detail, code, errors

    def response(self) -> JsonResponse:
        body: dict[str, Any] = {"detail": self.detail, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return JsonResponse(body, status=self.status)


def _token(request: HttpRequest) -> str | None:
    token = request.headers.get("X-Consul-Token") or request.GET.get("token")
    if token:
        return token
    parts = request.headers.get("Authorization", "").split()
    if len(parts) == 2 and parts[0].lower() in ("bearer", "token"):
        return parts[1]
    return None


def _authorize(request: HttpRequest) -> None:
    """Our API keys as Consul ACL tokens. Consul answers 403 for every token problem; so do we."""
    token = _token(request)
    if not token:
        raise _Refused(403, "Permission denied: send an API key as X-Consul-Token (or ?token=).",
                       "not_authenticated")
    key = _key_lookup(hash_key(token))
    now = timezone.now()
    if key is None or key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise _Refused(403, "ACL not found: unknown, revoked or expired API key.", "not_authenticated")
    _touch_last_used(key, now)
    if not any(key_has_scope(key, scope) for scope in READ_SCOPES):
        raise _Refused(403, "Permission denied: this API key needs the 'registry:read' or 'metrics' scope.",
                       "permission_denied")


def _bool(request: HttpRequest, name: str) -> bool:
    if name not in request.GET:
        return False
    value = request.GET[name]
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _Refused(400, f"Invalid value for ?{name}", "invalid", {name: ["Must be a boolean, e.g. true."]})


def _options(request: HttpRequest, extra: set[str], repeatable: set[str] = frozenset()) -> dict[str, Any]:
    allowed = _COMMON | extra
    errors = {name: [f"Not supported by this Consul API subset. Accepted: {', '.join(sorted(allowed))}."]
              for name in sorted(set(request.GET) - allowed)}
    errors.update({name: ["Given more than once; give it once."] for name in sorted(set(request.GET) & allowed)
                   if name not in repeatable and len(request.GET.getlist(name)) > 1})
    if errors:
        raise _Refused(400, f"Invalid query parameters: {', '.join(errors)}.", "invalid", errors)
    dc = request.GET.get("dc")
    if dc and dc != settings.CONSUL_DATACENTER:
        raise _Refused(400, f"No path to datacenter {dc!r}: this portal is {settings.CONSUL_DATACENTER!r}.",
                       "invalid", {"dc": ["Unknown datacenter."]})
    stale, consistent = _bool(request, "stale"), _bool(request, "consistent")
    if stale and consistent:
        raise _Refused(400, "Cannot specify ?stale with ?consistent, conflicting semantics.", "invalid")
    index = 0
    if "index" in request.GET:
        try:
            index = index_parse(request.GET["index"])
        except ValueError:
            raise _Refused(400, "Invalid index", "invalid", {"index": ["An unsigned integer."]}) from None
    wait = None
    if "wait" in request.GET:
        try:
            wait = duration_parse(request.GET["wait"])
        except ValueError:
            raise _Refused(400, "Invalid wait time", "invalid",
                           {"wait": ["A duration such as 30s, 5m or 1m30s (at most 10m)."]}) from None
    return {"index": index, "wait": wait,
            "consistency": "stale" if stale else "consistent" if consistent else "leader"}


def _sync(request: HttpRequest, fn: Callable, *args):
    """Run sync (ORM) code from the view.

    On the ASGI server: in the shared executor (``thread_sensitive=False``), so a waiting
    request never owns a thread. Under WSGI (and the test client) there is a request
    thread already: run there, inside its transaction and connection.
    """
    return sync_to_async(fn, thread_sensitive=not isinstance(request, ASGIRequest))(*args)


# One computation per (endpoint, arguments, index) however many watchers wake at once.
_inflight: dict[tuple, asyncio.Future] = {}
_answers: dict[tuple, tuple[int, bytes]] = {}
_ANSWERS_MAX = 1000


def answers_clear() -> None:
    _answers.clear()


def _compute(service_type: str | None, build: Callable[[], Any]) -> tuple[int, bytes]:
    # The index is read before the body: a body newer than its index only makes the next
    # blocking query return at once, never miss a change.
    index = index_read(service_type=service_type)
    return index, json.dumps(build(), separators=(",", ":")).encode()


async def _answer(request: HttpRequest, key: tuple, service_type: str | None,
                  build: Callable[[], Any]) -> tuple[int, bytes]:
    feed_index = index_feed().state.of(service_type)
    cached = _answers.get(key)
    if cached is not None and cached[0] == feed_index:
        return cached
    loop = asyncio.get_running_loop()
    flight_key = (id(loop), *key)
    pending = _inflight.get(flight_key)
    if pending is not None:
        return await asyncio.shield(pending)
    future: asyncio.Future = loop.create_future()
    _inflight[flight_key] = future
    try:
        result = await _sync(request, _compute, service_type, build)
        future.set_result(result)
        if len(_answers) >= _ANSWERS_MAX:
            _answers.clear()
        _answers[key] = result
        return result
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
        raise
    finally:
        _inflight.pop(flight_key, None)


async def _serve(request: HttpRequest, *, extra: set[str], repeatable: set[str] = frozenset(),
                 key: tuple, service_type: str | None, build: Callable[[], Any],
                 check: Callable[[], None] | None = None) -> HttpResponse:
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"], content=f"method {request.method} not allowed")
    try:
        options = _options(request, extra, repeatable)
        if check is not None:
            check()
        await _sync(request, _authorize, request)
    except _Refused as refused:
        return refused.response()
    if options["index"] > 0:
        feed = index_feed()
        await sync_to_async(feed.start, thread_sensitive=False)()  # no database work: any thread
        if feed.state.of(service_type) <= options["index"]:
            try:
                with watch_slot(key=hash_key(_token(request))):
                    await feed.wait_async(after=options["index"], service_type=service_type,
                                          timeout=wait_timeout(options["wait"]))
            except (TooManyWatches, WatchServerFull) as full:
                return watch_refusal(full)
        index, body = await _answer(request, key, service_type, build)
    else:
        index, body = await _sync(request, _compute, service_type, build)
    response = HttpResponse(body, content_type="application/json")
    response["X-Consul-Index"] = str(index)
    response["X-Consul-KnownLeader"] = "true"
    response["X-Consul-LastContact"] = "0"
    response["X-Consul-Effective-Consistency"] = options["consistency"]
    response["X-Consul-Query-Backend"] = "blocking-query"
    return response


@csrf_exempt  # token-authenticated, no cookies: a non-GET gets Consul's 405, not a CSRF 403
async def agent_self_view(request: HttpRequest) -> HttpResponse:
    """``GET /v1/agent/self``. Like Consul's agent endpoints: no index headers, no blocking."""
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"], content=f"method {request.method} not allowed")
    try:
        if set(request.GET) - {"token", "dc"}:
            bad = sorted(set(request.GET) - {"token", "dc"})
            raise _Refused(400, f"Invalid query parameters: {', '.join(bad)}.", "invalid",
                           {name: ["Not supported here. Accepted: token."] for name in bad})
        await _sync(request, _authorize, request)
    except _Refused as refused:
        return refused.response()
    return JsonResponse(consul.agent_self())


@csrf_exempt  # token-authenticated, no cookies: a non-GET gets Consul's 405, not a CSRF 403
async def catalog_services_view(request: HttpRequest) -> HttpResponse:
    """``GET /v1/catalog/services``: ``{name: [tags]}``."""
    return await _serve(request, extra=set(), key=("services",), service_type=None,
                        build=consul.catalog_services)


def _tags(request: HttpRequest) -> list[str]:
    return request.GET.getlist("tag")


@csrf_exempt  # token-authenticated, no cookies: a non-GET gets Consul's 405, not a CSRF 403
async def catalog_service_view(request: HttpRequest, name: str) -> HttpResponse:
    """``GET /v1/catalog/service/{name}`` (``?tag=`` repeatable, ANDed)."""
    service_type, tags = consul.consul_type(name), _tags(request)
    return await _serve(
        request, extra={"tag"}, repeatable={"tag"}, key=("catalog", service_type, tuple(tags)),
        service_type=service_type,
        build=lambda: consul.catalog_service(service_type=service_type, tags=tags),
    )


@csrf_exempt  # token-authenticated, no cookies: a non-GET gets Consul's 405, not a CSRF 403
async def health_service_view(request: HttpRequest, name: str) -> HttpResponse:
    """``GET /v1/health/service/{name}`` (``?passing``, ``?tag=``)."""
    service_type, tags = consul.consul_type(name), _tags(request)
    holder: dict[str, bool] = {}

    def check() -> None:
        holder["passing"] = _bool(request, "passing")

    return await _serve(
        request, extra={"tag", "passing"}, repeatable={"tag"}, check=check,
        key=("health", service_type, tuple(tags), request.GET.get("passing")),
        service_type=service_type,
        build=lambda: consul.health_service(service_type=service_type, tags=tags,
                                            passing=holder.get("passing", False)),
    )


@csrf_exempt  # token-authenticated, no cookies: a non-GET gets Consul's 405, not a CSRF 403
async def health_state_view(request: HttpRequest, state: str) -> HttpResponse:
    """``GET /v1/health/state/{state}``: any, passing, warning or critical."""

    def check() -> None:
        if state not in consul.HEALTH_STATES:
            raise _Refused(400, "Invalid check state", "invalid",
                           {"state": [f"One of {', '.join(consul.HEALTH_STATES)}."]})

    return await _serve(request, extra=set(), key=("state", state), service_type=None, check=check,
                        build=lambda: consul.health_state(state=state))
