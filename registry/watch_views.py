"""The native watches (``?index=&wait=``) as async views, for the ASGI watch server.

On the regular (WSGI) server ``GET /registry/services`` and ``GET /discovery/{type}``
wait in their own thread (``registry.watch.watch_sync``). Here the same requests
wait without one: the DRF view answers once at once (authentication, validation,
the answer and its index), and only if the caller's index is current does the
request wait on the process's index feed, then ask the view again. Watchers
woken by the same change share one answer (one query, not one per watcher).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from berrys_portal.errors import PortalError
from berrys_portal.ready_response import ReadyResponse, ready_wanted
from registry import views
from registry.auth import hash_key
from registry.watch import (
    INDEX_HEADER,
    TooManyWatches,
    WatchServerFull,
    index_feed,
    wait_timeout,
    watch_params,
    watch_refusal,
    watch_slot,
)

_WATCH = ("index", "wait")
SHARE_SECONDS = 1.0
_ANSWERS_MAX = 1000
_inflight: dict[tuple, asyncio.Future] = {}
_answers: dict[tuple, tuple[float, tuple]] = {}
_ready: dict[tuple, tuple[tuple, ReadyResponse]] = {}


def answers_clear() -> None:
    _answers.clear()
    _ready.clear()


def _call(view: Callable, request: HttpRequest, kwargs: dict) -> tuple[int, list[tuple[str, str]], bytes]:
    response = view(request, **kwargs)
    if hasattr(response, "render"):
        response.render()
    return response.status_code, list(response.items()), response.content


def _response(status: int, headers: list[tuple[str, str]], content: bytes,
              cls: type[HttpResponse] = HttpResponse) -> HttpResponse:
    response = cls(content, status=status)
    for name, value in headers:
        response[name] = value
    return response


def _ready_response(shared: tuple, secure: bool, answer: tuple) -> ReadyResponse:
    """One response object for the watches ``shared`` names (same path, query, credentials, index).

    ``answer`` is the view's shared answer for ``shared`` (reused for at most
    ``SHARE_SECONDS``); the response object lives as long as that answer does, and is
    per scheme (the middleware's HSTS header).
    """
    entry = _ready.get((shared, secure))
    if entry is None or entry[0] is not answer:
        if len(_ready) >= _ANSWERS_MAX:
            _ready.clear()
        entry = _ready[shared, secure] = (answer, _response(*answer, cls=ReadyResponse))
    return entry[1]


async def _answer(view: Callable, request: HttpRequest, kwargs: dict, shared: tuple | None):
    """The view's answer, computed once per ``shared`` key by the first watcher that asks.

    ``shared`` ends with the registry index the answer is computed at (or after), so an
    answer is reused only while the index holds; and for at most ``SHARE_SECONDS``, so
    that a key revoked meanwhile is refused as soon as it would be without sharing
    (other processes see a revocation within ``API_KEY_CACHE_SECONDS`` anyway).
    """
    if shared is None:
        return await sync_to_async(_call, thread_sensitive=False)(view, request, kwargs)
    cached = _answers.get(shared)
    if cached is not None and time.monotonic() - cached[0] < SHARE_SECONDS:
        return cached[1]
    future = _inflight.get(shared)
    if future is not None:
        return await asyncio.shield(future)
    future = asyncio.get_running_loop().create_future()
    _inflight[shared] = future
    try:
        result = await sync_to_async(_call, thread_sensitive=False)(view, request, kwargs)
        future.set_result(result)
        if len(_answers) >= _ANSWERS_MAX:
            _answers.clear()
        _answers[shared] = (time.monotonic(), result)
        return result
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()
        raise
    finally:
        _inflight.pop(shared, None)


def native_watch(view: Callable, *, type_kwarg: str | None = None) -> Callable:
    @csrf_exempt
    async def watch(request: HttpRequest, **kwargs) -> HttpResponseBase:
        if request.method != "GET":
            return JsonResponse({"detail": "The watch server answers GET only.", "code": "method_not_allowed"},
                                status=405)
        try:
            index, wait = watch_params(request.GET.get("index"), request.GET.get("wait"))
        except PortalError as exc:
            return JsonResponse(exc.as_dict(), status=exc.status_code)
        query = request.GET.copy()
        for name in _WATCH:
            query.pop(name, None)
        request.GET = query  # the view answers at once; the waiting happens here
        service_type = kwargs.get(type_kwarg) if type_kwarg else None
        feed = index_feed()
        if not feed.ready():
            await sync_to_async(feed.start, thread_sensitive=False)()
        # Same path, query and credentials at the same index: one answer for all of them
        # (a thousand watchers re-opening after a change share the answer that woke them).
        credentials = request.headers.get("Authorization", "")
        shared = (request.path, query.urlencode(), credentials, request.headers.get("Accept"),
                  feed.current(service_type))
        answer = await _answer(view, request, kwargs, shared if index else None)
        status, headers, content = answer
        current = dict(headers).get(INDEX_HEADER)
        if index == 0 or current is None or int(current) > index:  # also refusals (401, 403, 400)
            if index and ready_wanted(request):
                return _ready_response(shared, request.is_secure(), answer)
            return _response(status, headers, content)
        try:
            with watch_slot(key=hash_key(credentials.split()[-1] if credentials else "")):  # "Token <key>"
                after = await feed.wait_async(after=index, service_type=service_type, timeout=wait_timeout(wait))
        except (TooManyWatches, WatchServerFull) as full:
            return watch_refusal(full)
        shared = (request.path, query.urlencode(), credentials, request.headers.get("Accept"), after)
        answer = await _answer(view, request, kwargs, shared)
        if ready_wanted(request):
            return _ready_response(shared, request.is_secure(), answer)
        return _response(*answer)

    return watch


service_list_watch = native_watch(views.ServiceCollectionView.as_view())
discovery_watch = native_watch(views.DiscoveryView.as_view(), type_kwarg="service_type")
