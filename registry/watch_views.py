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


def answers_clear() -> None:
    _answers.clear()


def _call(view: Callable, request: HttpRequest, kwargs: dict) -> tuple[int, list[tuple[str, str]], bytes]:
    response = view(request, **kwargs)
    if hasattr(response, "render"):
        response.render()
    return response.status_code, list(response.items()), response.content


def _response(status: int, headers: list[tuple[str, str]], content: bytes) -> HttpResponse:
    response = HttpResponse(content, status=status)
    for name, value in headers:
        response[name] = value
    return response


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
        shared = (request.path, query.urlencode(), credentials, feed.current(service_type))
        status, headers, content = await _answer(view, request, kwargs, shared if index else None)
        current = dict(headers).get(INDEX_HEADER)
        if index == 0 or current is None or int(current) > index:
            return _response(status, headers, content)  # also refusals (401, 403, 400)
        try:
            with watch_slot(key=hash_key(credentials.split()[-1] if credentials else "")):  # "Token <key>"
                after = await feed.wait_async(after=index, service_type=service_type, timeout=wait_timeout(wait))
        except (TooManyWatches, WatchServerFull) as full:
            return watch_refusal(full)
        shared = (request.path, query.urlencode(), credentials, after)
        return _response(*await _answer(view, request, kwargs, shared))

    return watch


service_list_watch = native_watch(views.ServiceCollectionView.as_view())
discovery_watch = native_watch(views.DiscoveryView.as_view(), type_kwarg="service_type")
