"""ASGI entry point of the watch server: ``uvicorn berrys_portal.asgi_watch:application``.

Django's ASGIHandler runs each request inside its own ``ThreadSensitiveContext``: the
request's sync work (the request_started / request_finished signal receivers, closing
the response) then runs on a thread created for that request and kept until it ends
— a thread per open watch. The watch views do their database work in the shared
executor (``thread_sensitive=False``), so this handler leaves that context out: the
little sync work left runs on asgiref's one shared sync thread, and 1,000 open
watches hold a fixed handful of threads (tests/registry/test_watch_server.py).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings_watch")
django.setup(set_prefix=False)

from django.core.handlers.asgi import ASGIHandler  # noqa: E402 - after setup


class WatchASGIHandler(ASGIHandler):
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"The watch server serves HTTP only, not {scope['type']}.")
        await self.handle(scope, receive, send)


application = WatchASGIHandler()
