"""One answer sent as is to many requests of the watch server: rendered to bytes once.

When a change wakes a thousand watches asking the same thing, each used to get its
own ``HttpResponse`` (headers set one by one), its own pass through the security
middleware, its own encoding of the headers into ASGI messages and its own
``close()`` (the request_finished signal): about 0.2 ms of event-loop CPU each,
0.2 s for the last of a thousand. A ``ReadyResponse`` is built once per
(path, query, credentials scope, index) by the view, passed through the middleware
once (``middleware_once``), and rendered once to the ASGI messages Django's
``send_response`` would send (``asgi_messages``); the watch server's handler sends
those messages to every request that got it. The bytes on the wire are the same as a
fresh answer's: they are what ``send_response`` produced for the first.

Only the watch server's handler asks for them (it marks its requests
``send_ready``): under another handler (WSGI, the test client) middleware may add
per-request headers to a response object, and a shared one would carry them to others.
Its ``close()`` is not called: the handler runs in the event loop, whose thread holds
no database connection or cache client for request_finished's receivers to close; nor
the requests' ``close()`` (it closes uploaded files: a GET has none; the handler closes
the body).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class _NoClosers(list):
    """Django's handler appends each request's ``close`` to its response; not to a shared one."""

    def append(self, closer) -> None:
        pass


class ReadyResponse(HttpResponse):
    """An ``HttpResponse`` shared by every request asking the same thing at the same index."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._resource_closers = _NoClosers()  # else it would keep every request it answered
        self._processed = False
        self._messages: list[dict] | None = None

    def middleware_once(self, process: Callable[[HttpResponse], HttpResponse]) -> HttpResponse:
        """``process(self)`` the first time only (the middleware's headers then stay in it)."""
        if not self._processed:
            result = process(self)
            if result is not self:  # a middleware replaced it: that one is this request's own
                return result
            self._processed = True
        return self

    async def asgi_messages(self, render) -> list[dict]:
        """The ASGI messages of this answer; ``render(response, send)`` (Django's send_response) once."""
        if self._messages is None:
            messages: list[dict] = []

            async def keep(message: dict) -> None:
                messages.append(message)

            await render(self, keep)
            self._messages = messages
        return self._messages


def ready_wanted(request: HttpRequest) -> bool:
    """Whether this request's handler sends ready-made answers (the watch server's does)."""
    return getattr(request, "send_ready", False)
