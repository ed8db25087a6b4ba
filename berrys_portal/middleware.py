"""Request-level guards that run before any view."""

from __future__ import annotations

from urllib.parse import quote

from django.conf import settings
from django.http import JsonResponse

# Headers WSGI passes without the HTTP_ prefix.
_UNPREFIXED_HEADERS = {"CONTENT_TYPE": "Content-Type", "CONTENT_LENGTH": "Content-Length"}


def _request_target(meta: dict) -> str:
    """The request target as sent: gunicorn keeps it in RAW_URI; otherwise rebuild it."""
    raw = meta.get("RAW_URI") or meta.get("REQUEST_URI")
    if raw:
        return raw
    path = quote(meta.get("SCRIPT_NAME", "") + meta.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=-._~%")
    query = meta.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


class RequestLimitsMiddleware:
    """Refuse an over-long request line (414) or header (431) in the API's error shape.

    gunicorn answers its own HTML 400 beyond ``limit_request_line`` /
    ``limit_request_field_size`` / ``limit_request_fields``; gunicorn_conf.py sets those
    above ``API_MAX_REQUEST_LINE_BYTES`` / ``API_MAX_HEADER_BYTES`` / ``API_MAX_HEADERS`` so
    that requests between the two limits reach this middleware and get a JSON answer a
    client can read. First in MIDDLEWARE: nothing else spends work on such a request.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        meta = request.META
        line = len(meta.get("REQUEST_METHOD", "")) + 1 + len(_request_target(meta)) + 1 + len(
            meta.get("SERVER_PROTOCOL", "HTTP/1.1"))
        limit = settings.API_MAX_REQUEST_LINE_BYTES
        if line > limit:
            return JsonResponse(
                {"detail": f"The request line is {line} bytes; the limit is {limit} bytes "
                           "(API_MAX_REQUEST_LINE_BYTES). Send long input in a body.",
                 "code": "request_line_too_long"},
                status=414,
            )
        count = 0
        field_limit = settings.API_MAX_HEADER_BYTES
        for key, value in meta.items():
            if key.startswith("HTTP_"):
                name = key[5:].replace("_", "-").title()
            elif key in _UNPREFIXED_HEADERS:
                name = _UNPREFIXED_HEADERS[key]
            else:
                continue
            count += 1
            size = len(name) + 2 + len(value)  # "Name: value", as gunicorn counts a field
            if size > field_limit:
                return JsonResponse(
                    {"detail": f"Header {name} is {size} bytes; the limit is {field_limit} bytes "
                               "(API_MAX_HEADER_BYTES).",
                     "code": "header_too_large", "errors": {name: [f"Longer than {field_limit} bytes."]}},
                    status=431,
                )
        if count > settings.API_MAX_HEADERS:
            return JsonResponse(
                {"detail": f"The request has {count} headers; the limit is {settings.API_MAX_HEADERS} "
                           "(API_MAX_HEADERS).",
                 "code": "too_many_headers"},
                status=431,
            )
        return self.get_response(request)


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
