"""Settings of the ASGI watch server: the portal's, with its URLs and only async-capable middleware.

The portal's own middleware (request limits, body size) is sync-only: under ASGI each
would run in a thread kept for the whole request, i.e. a thread per open watch. The
watch server's one middleware (``middleware_watch``) is async: the Host check and the
security headers without a thread hop.
The watch server serves GETs only (no body), and uvicorn bounds request lines and
headers itself (h11).
"""

from berrys_portal.settings import *  # noqa: F403

ROOT_URLCONF = "berrys_portal.urls_watch"
# Django's SecurityMiddleware (sync-only: two thread hops per request) run in the event
# loop, after the Host check against ALLOWED_HOSTS.
MIDDLEWARE = ["berrys_portal.middleware_watch.watch_middleware"]
