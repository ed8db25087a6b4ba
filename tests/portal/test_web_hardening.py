"""Web hardening: start-up refusals per profile, the gunicorn bind, proxy headers, the CSP header."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "k" + "x7Qp2-vL9_mZ4rT8wY1uB6nE3sA5dF0gH" * 2

PRINT_SETTINGS = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'DEBUG': s.DEBUG, 'SECRET_KEY': s.SECRET_KEY, "
    "'SECURE_PROXY_SSL_HEADER': s.SECURE_PROXY_SSL_HEADER, 'PORTAL_BIND': s.PORTAL_BIND}))"
)


def _settings(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "TRUST_PROXY_HEADERS", "PORTAL_BIND")}
    # Production also refuses to start without an allow-list (the egress policy): give it one.
    base.update(DJANGO_SETTINGS_MODULE="berrys_portal.settings", ALLOWED_HOSTS="portal.example.com",
                REGISTRY_ALLOWED_NETWORKS="10.0.0.0/8", **env)
    return subprocess.run([sys.executable, "-c", PRINT_SETTINGS], cwd=ROOT, env=base,
                          capture_output=True, text=True, timeout=60)


def _loaded(**env: str) -> dict:
    result = _settings(**env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_refuses_the_development_secret_key_with_a_clear_message():
    result = _settings(DJANGO_ENV="production",
                       SECRET_KEY="django-insecure-development-only-key-never-use-in-production")
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is a development key: production needs its own" in result.stderr


def test_production_refuses_a_long_key_with_almost_no_randomness():
    result = _settings(DJANGO_ENV="production", SECRET_KEY="ab" * 40)
    assert "SECRET_KEY must be at least 50 random characters" in result.stderr


def test_production_refuses_debug_at_start_up():
    result = _settings(DJANGO_ENV="production", SECRET_KEY=GOOD_KEY, DEBUG="1")
    assert result.returncode != 0
    assert "ImproperlyConfigured: DEBUG=1 is refused under DJANGO_ENV=production" in result.stderr


@pytest.mark.parametrize(("profile", "debug"), [("development", True), ("test", False), ("production", False)])
def test_debug_is_on_by_default_only_in_the_development_profile(profile, debug):
    assert _loaded(DJANGO_ENV=profile, SECRET_KEY=GOOD_KEY)["DEBUG"] is debug


def test_the_test_profile_refuses_debug_too():
    assert "DEBUG=1 is refused under DJANGO_ENV=test" in _settings(DJANGO_ENV="test", DEBUG="1").stderr


def test_x_forwarded_proto_is_trusted_only_when_the_setting_says_so():
    assert _loaded(DJANGO_ENV="production", SECRET_KEY=GOOD_KEY)["SECURE_PROXY_SSL_HEADER"] is None
    trusted = _loaded(DJANGO_ENV="production", SECRET_KEY=GOOD_KEY, TRUST_PROXY_HEADERS="1")
    assert trusted["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_a_client_claiming_https_is_not_believed_without_a_trusted_proxy(client, settings):
    settings.SECURE_PROXY_SSL_HEADER = None
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/health", HTTP_X_FORWARDED_PROTO="https", secure=False)
    assert response.status_code == 301 and response["Location"].startswith("https://")


# --- gunicorn -------------------------------------------------------------------------------

def test_the_gunicorn_bind_defaults_to_loopback_and_comes_from_portal_bind(monkeypatch):
    conf = str(ROOT / "berrys_portal" / "gunicorn_conf.py")
    monkeypatch.delenv("PORTAL_BIND", raising=False)
    monkeypatch.delenv("PORTAL_PORT", raising=False)
    assert runpy.run_path(conf)["bind"] == "127.0.0.1:8090"
    monkeypatch.setenv("PORTAL_BIND", "[::1]:8765")
    assert runpy.run_path(conf)["bind"] == "[::1]:8765"
    monkeypatch.setenv("PORTAL_BIND", "0.0.0.0")  # no port: refused, naming the variable
    with pytest.raises(ImproperlyConfigured, match="PORTAL_BIND='0.0.0.0' is not a listen address"):
        runpy.run_path(conf)


def test_gunicorn_listens_where_portal_bind_says(transactional_db, tmp_path):
    from tests.gunicorn import gunicorn_running

    with gunicorn_running(tmp_path, bind=False, env={"PORTAL_BIND": "127.0.0.1:0"}) as server:
        response = requests.get(f"{server.url}/health", timeout=10)
        assert response.status_code in (200, 503)
        assert "Content-Security-Policy" in response.headers


# --- Content-Security-Policy ------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/admin/login/", "/admin/", "/api/docs/", "/admin/workflows/workflowrun/"])
def test_every_page_carries_the_content_security_policy(client, admin_client, path):
    response = (client if path == "/admin/login/" else admin_client).get(path)
    assert response.status_code == 200
    policy = dict(
        (part.split(" ", 1) + [""])[:2] for part in (p.strip() for p in response["Content-Security-Policy"].split(";"))
    )
    assert policy["script-src"] == "'self'"  # no inline or third-party script
    assert policy["default-src"] == "'self'" and policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'" and policy["form-action"] == "'self'"


def test_swagger_ui_loads_its_init_script_from_the_portal_not_inline(admin_client):
    html = admin_client.get("/api/docs/").content.decode()
    assert re.search(r"<script>\s*\S", html) is None  # every <script> has a src
    init = re.search(r'<script src="([^"]*\?script=?)"', html)
    assert init, html
    assert admin_client.get(init.group(1).replace("&amp;", "&"))["Content-Type"].startswith("application/javascript")
