"""The watch server's middleware: the Host check and the security headers, in the event loop.

Django's ``SecurityMiddleware`` is sync-only: under ASGI, Django hands its
``process_request`` and ``process_response`` to one sync thread, two hops per
request. When one change wakes a thousand watches, that is a thousand hops queued
on one thread, each a GIL hand-over (profiled: most of the event loop's time in
the wake-up). Neither method does I/O, so this middleware calls them directly.

It also checks the Host header against ``ALLOWED_HOSTS`` first, as the regular
server does (there ``CommonMiddleware`` asks ``request.get_host()``): a disallowed
Host raises ``DisallowedHost`` and gets the ``handler400`` answer (the API's JSON
error shape, status 400) before any view runs.
"""

from __future__ import annotations

from django.middleware.security import SecurityMiddleware
from django.utils.decorators import async_only_middleware


@async_only_middleware
def watch_middleware(get_response):
    security = SecurityMiddleware(get_response)

    async def middleware(request):
        request.get_host()  # DisallowedHost -> handler400, as on the regular server
        response = security.process_request(request)  # the HTTPS redirect, when configured
        if response is None:
            response = await get_response(request)
        return security.process_response(request, response)

    return middleware
