"""Over-long request lines and headers are answered in the API's JSON error shape (414 / 431),
under Django's test client and under the real gunicorn configuration."""

from __future__ import annotations

import json
import os
import re
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from tests.gunicorn import gunicorn_running

ROOT = Path(__file__).resolve().parents[1]


def test_gunicorns_limits_sit_above_the_portals():
    conf = runpy.run_path(str(ROOT / "berrys_portal" / "gunicorn_conf.py"))
    assert conf["limit_request_line"] > settings.API_MAX_REQUEST_LINE_BYTES
    assert conf["limit_request_field_size"] > settings.API_MAX_HEADER_BYTES
    assert conf["limit_request_fields"] > settings.API_MAX_HEADERS


@pytest.mark.django_db
def test_a_long_request_line_is_a_json_414():
    response = Client().get("/registry/services", {"name": "x" * 5000})
    assert response.status_code == 414
    body = response.json()
    assert body["code"] == "request_line_too_long" and "API_MAX_REQUEST_LINE_BYTES" in body["detail"]


@pytest.mark.django_db
def test_a_long_header_or_too_many_headers_is_a_json_431():
    big = Client().get("/health", HTTP_X_PADDING="y" * 9000)
    assert big.status_code == 431 and "X-Padding" in big.json()["errors"]
    many = Client().get("/health", **{f"HTTP_X_H{i}": "1" for i in range(120)})
    assert many.status_code == 431 and many.json()["code"] == "too_many_headers"
    assert Client().get("/health", HTTP_X_PADDING="y" * 1000).status_code in (200, 503)


# ----------------------------------------------------------------------------- under gunicorn


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    with gunicorn_running(tmp_path) as server:
        yield server.port


def _raw(port: int, target: str, headers: list[str] = ()) -> tuple[int, str, str]:
    """Send one request as bytes (no client library normalising it); (status, content type, body).
    HTTP/1.0, so the answer is not chunked."""
    lines = [f"GET {target} HTTP/1.0", "Host: 127.0.0.1", "Connection: close", *headers, "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    ctype = re.search(rb"(?im)^content-type:\s*([^\r\n;]+)", head)
    return status, (ctype.group(1).decode() if ctype else ""), body.decode("latin-1")


@pytest.mark.slow
def test_under_gunicorn_oversize_requests_get_the_api_error_shape(gunicorn):
    # A 4.5 KB request line used to get gunicorn's HTML 400.
    status, ctype, body = _raw(gunicorn, "/registry/services?name=" + "x" * 4500)
    assert (status, ctype) == (414, "application/json"), body[:300]
    assert json.loads(body)["code"] == "request_line_too_long"

    status, ctype, body = _raw(gunicorn, "/health", [f"X-Padding: {'y' * 12000}"])
    assert (status, ctype) == (431, "application/json"), body[:300]
    assert "X-Padding" in json.loads(body)["errors"]

    status, ctype, body = _raw(gunicorn, "/health", [f"X-H{i}: 1" for i in range(150)])
    assert (status, ctype) == (431, "application/json"), body[:300]

    # Just under the portal's limits: answered normally (401: no key).
    status, ctype, body = _raw(gunicorn, "/registry/services?name=" + "x" * 4000, ["X-Padding: " + "y" * 8000])
    assert (status, ctype) == (401, "application/json"), body[:300]

    # Beyond gunicorn's own ceilings (8190 for the line is its maximum) gunicorn answers itself,
    # in the same shape (berrys_portal/gunicorn_errors.py): it used to be an HTML page.
    status, ctype, body = _raw(gunicorn, "/registry/services?name=" + "x" * 9000)
    assert (status, ctype) == (414, "application/json"), body[:300]
    assert json.loads(body)["code"] == "request_line_too_long"
    assert "Request Line is too large" in json.loads(body)["detail"]

    status, ctype, body = _raw(gunicorn, "/health", [f"X-Padding: {'y' * 20000}"])
    assert (status, ctype) == (431, "application/json"), body[:300]
    assert json.loads(body)["code"] == "header_too_large"


@pytest.mark.slow
def test_under_gunicorn_a_malformed_request_gets_the_api_error_shape(gunicorn):
    with socket.create_connection(("127.0.0.1", gunicorn), timeout=20) as sock:
        sock.sendall(b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n")
        head, _, body = sock.recv(65536).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
    assert json.loads(body)["code"] == "bad_request"


@pytest.mark.parametrize(("name", "value"), [("API_MAX_REQUEST_LINE_BYTES", "8190"), ("API_MAX_HEADER_BYTES", "20000"),
                                             ("API_MAX_HEADERS", "200"), ("API_MAX_JSON_DEPTH", "501")])
def test_limits_gunicorn_would_answer_first_are_refused_at_start_up(name, value):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "berrys_portal.settings_test", name: value}
    proc = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "ImproperlyConfigured" in proc.stderr and name in proc.stderr


@pytest.mark.django_db
def test_more_query_parameters_than_django_reads_is_a_json_400():
    # Django refuses past DATA_UPLOAD_MAX_NUMBER_FIELDS (1000) with SuspiciousOperation: its page was HTML.
    response = Client().get("/registry/services?" + "&".join(["a"] * 1500))
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json()["code"] == "bad_request" and "DATA_UPLOAD_MAX_NUMBER_FIELDS" in response.json()["detail"]
    page = Client().get("/admin/login/?" + "&".join(["a"] * 1500))
    assert page.status_code == 400 and page["Content-Type"].startswith("text/html")  # the admin keeps Django's
