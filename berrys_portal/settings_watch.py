"""Settings of the ASGI watch server: the portal's, with its URLs and only async-capable middleware.

The portal's own middleware (request limits, body size) is sync-only: under ASGI each
would run in a thread kept for the whole request, i.e. a thread per open watch.
The watch server serves GETs only (no body), and uvicorn bounds request lines and
headers itself (h11).
"""

from berrys_portal.settings import *  # noqa: F403

ROOT_URLCONF = "berrys_portal.urls_watch"
MIDDLEWARE = ["django.middleware.security.SecurityMiddleware"]
