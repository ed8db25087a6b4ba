"""Who the client is, for the admin login throttle (django-axes' AXES_CLIENT_IP_CALLABLE).

Behind the proxy every request comes from the proxy's address, so a lock-out per
(username, REMOTE_ADDR) would be a lock-out per username for everyone. With
TRUST_PROXY_HEADERS on, the proxy's own X-Forwarded-For entry (the right-most: the
client can forge every entry left of it) names the client instead.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    if settings.TRUST_PROXY_HEADERS:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return request.META.get("REMOTE_ADDR")
