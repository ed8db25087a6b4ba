"""ASGI entry point of the watch server: ``uvicorn berrys_portal.asgi_watch:application``.

Django's ASGIHandler runs each request inside its own ``ThreadSensitiveContext`` and
hops to a sync thread for the request_started receivers and again to close the
response: a thread created per request and kept until it ends (a thread per open
watch), and, when one change wakes a thousand watches, a thousand hops queued on
that thread. The watch views do their database work in the shared executor
(``thread_sensitive=False``) and never touch the database from the event loop, so
this handler serves them without either: the same steps as Django's (read the body,
build the request, run the middleware and view, stop when the client disconnects,
send, close), with the response closed in the loop (its request_finished receivers
find no database connection of the loop's thread to close). A ``ReadyResponse`` (one
answer shared by the watches a change woke, ``berrys_portal.ready_response``) is sent
as the ASGI messages rendered for the first of them, and not closed. While watches a
change woke are being answered, a new request waits before it is read
(``berrys_portal.answer_gate``: answers first). Once loaded, the
process's objects are frozen out of the garbage collector (``gc.freeze``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings_watch")
django.setup(set_prefix=False)

from django.core.exceptions import RequestAborted  # noqa: E402 - after setup
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

from berrys_portal.answer_gate import answer_gate, answers_owed  # noqa: E402
from berrys_portal.ready_response import ReadyResponse  # noqa: E402


class WatchASGIHandler(ASGIHandler):
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"The watch server serves HTTP only, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        gate = answer_gate()
        await gate.passage()  # the watches a change woke are answered before this request runs
        owed = answers_owed()  # this request's watch, if the feed wakes it
        try:
            await self._handle(scope, receive, send)
        finally:
            gate.settle(len(owed))

    async def _handle(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            request, response = self.create_request(scope, body_file)
            if request is not None:
                request.send_ready = True  # the views may answer with a shared ReadyResponse
                serving = asyncio.ensure_future(self.get_response_async(request))
                disconnect = asyncio.ensure_future(self.listen_for_disconnect(receive))
                await asyncio.wait({serving, disconnect}, return_when=asyncio.FIRST_COMPLETED)
                if not serving.done():  # the watcher went away: stop waiting on its behalf
                    serving.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await serving
                    with contextlib.suppress(RequestAborted):
                        disconnect.result()
                    return
                disconnect.cancel()
                response = serving.result()
            if isinstance(response, ReadyResponse):
                with contextlib.suppress(asyncio.CancelledError):
                    for message in await response.asgi_messages(self.send_response):
                        await send(message)
                return
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass
            finally:
                response.close()
        finally:
            body_file.close()


application = WatchASGIHandler()

# Django, the apps and the URLconf are loaded: move those objects out of the collector's
# reach. Otherwise each full collection during a wake-up (1,000 requests and futures
# allocated at once) walks them all again; measured: CPU per change 0.40-0.42 s -> 0.33-0.35 s
# (docs/benchmarks.md, Watches).
gc.freeze()
