"""gunicorn's own error answers in the API's JSON shape.

gunicorn refuses some requests before Django sees them — a request line over
``limit_request_line`` (at most 8190 bytes), a header over
``limit_request_field_size``, more than ``limit_request_fields`` headers, a
malformed request line — and answers with a small HTML page. The portal's own
limits sit below gunicorn's (berrys_portal.middleware.RequestLimitsMiddleware),
so most oversize requests get the JSON answer from Django; this covers the rest.

gunicorn has no setting for its error format: its workers call
``gunicorn.util.write_error`` for every such answer (and nothing else), so
``install()`` — run by gunicorn_conf.py in the master, before workers fork —
replaces that one function.
"""

from __future__ import annotations

import json

# gunicorn's message for LimitRequestLine; the portal answers long lines with 414.
_LONG_LINE = "Request Line is too large"
_CODES = {400: "bad_request", 403: "forbidden", 431: "header_too_large", 500: "server_error",
          501: "not_implemented"}


def json_error(status_int: int, reason: str, mesg: str) -> tuple[int, str, bytes]:
    """(status, reason, body) of gunicorn's error ``status_int reason: mesg`` in the API's shape."""
    if status_int == 400 and mesg.startswith(_LONG_LINE):
        status_int, reason, code = 414, "URI Too Long", "request_line_too_long"
    else:
        code = _CODES.get(status_int, "bad_request")
    detail = f"{reason}: {mesg}" if mesg else reason
    return status_int, reason, json.dumps({"detail": detail, "code": code}).encode()


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error`` (same arguments)."""
    from gunicorn import util

    status_int, reason, body = json_error(status_int, reason, mesg)
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install() -> None:
    from gunicorn import util

    util.write_error = write_json_error
