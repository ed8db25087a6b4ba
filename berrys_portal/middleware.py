"""Request-level guards that run before any view."""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse


class BodySizeLimitMiddleware:
    """Refuse API bodies larger than ``API_MAX_BODY_BYTES`` with a 413 in the API's error shape.

    Checked from Content-Length before the body is read, so an oversize upload
    costs nothing. A chunked body without a Content-Length gets 411: Django reads a
    body by its Content-Length only, so it would arrive empty and be answered as if
    its fields were missing.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith("/admin/"):
            if ("chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
                    and not request.META.get("CONTENT_LENGTH")):
                return JsonResponse(
                    {"detail": "Send the body with a Content-Length: chunked request bodies are not accepted.",
                     "code": "length_required"},
                    status=411,
                )
            raw = request.META.get("CONTENT_LENGTH") or "0"
            try:
                length = int(raw)
                if length < 0:
                    raise ValueError(raw)
            except ValueError:
                return JsonResponse(
                    {"detail": f"Content-Length {raw!r} is not a valid length.", "code": "invalid"},
                    status=400,
                )
            limit = settings.API_MAX_BODY_BYTES
            if length > limit:
                return JsonResponse(
                    {
                        "detail": f"Request body is {length} bytes; the limit is {limit} bytes.",
                        "code": "payload_too_large",
                    },
                    status=413,
                )
        return self.get_response(request)
