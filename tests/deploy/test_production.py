"""The production profile as the README tells an operator to run it.

``DJANGO_ENV=production`` with PostgreSQL, Redis and a real secret key;
``collectstatic``; then the ``web:`` command of ``deploy/Procfile.production``
(gunicorn with ``berrys_portal/gunicorn_conf.py``) behind a stand-in for the TLS
proxy (the ``X-Forwarded-Proto: https`` header it sets). Chromium logs in and the
admin's pages load with their CSS, served by WhiteNoise.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection

from tests.dashboard.test_browser import CHROMIUM, browser, sync_playwright  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
PROCFILE = ROOT / "deploy" / "Procfile.production"
ADMIN_HEADER_BG = "rgb(65, 118, 144)"  # Django admin's --header-bg (#417690), from base.css

pytestmark = [pytest.mark.slow]


def _procfile_command(name: str) -> list[str]:
    for line in PROCFILE.read_text().splitlines():
        if line.startswith(f"{name}:"):
            return shlex.split(line.split(":", 1)[1])
    raise AssertionError(f"no {name}: line in {PROCFILE}")


def test_the_production_procfile_has_a_worker_for_every_queue_and_one_beat():
    """Every queue the portal sends to is consumed by a worker of deploy/Procfile.production."""
    lines = dict(line.split(":", 1) for line in PROCFILE.read_text().splitlines()
                 if line and not line.startswith("#"))
    consumed = set()
    for command in lines.values():
        words = shlex.split(command)
        if "worker" in words:
            queue = words[words.index("-Q") + 1]
            consumed.add(re.sub(r"\$\{\w+:-(\w+)\}", r"\1", queue))
    assert consumed == {settings.HEALTH_QUEUE, settings.WORKFLOW_QUEUE, "celery"}
    assert settings.OUTBOX_QUEUE in consumed  # alerts are derived and delivered there
    assert [name for name, command in lines.items() if " beat " in command] == ["beat"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _production_env(tmp_path: Path, port: int) -> dict[str, str]:
    db = settings.DATABASES["default"]
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE")}
    env.update(
        DJANGO_SETTINGS_MODULE="berrys_portal.settings",
        DJANGO_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(64),
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{connection.settings_dict['NAME']}",
        REDIS_URL=settings.REDIS_URL,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        CSRF_TRUSTED_ORIGINS=f"http://localhost:{port}",
        REGISTRY_ALLOWED_NETWORKS="127.0.0.0/8",
        TRUST_PROXY_HEADERS="1",  # deploy/env.example: the TLS proxy's headers are trusted
        PORTAL_VAR_DIR=str(tmp_path / "var"),
        STATIC_ROOT=str(tmp_path / "static"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
        PORTAL_PORT=str(port),
        WEB_CONCURRENCY="1",
        PYTHONPATH=str(ROOT),
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    )
    return env


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture
def production_web(transactional_db, tmp_path):
    port = _free_port()
    env = _production_env(tmp_path, port)
    # The first operator, as the README says (the production password hasher, not the suite's).
    password_file = tmp_path / "password"
    password_file.write_text("a-long-production-password\n")
    created = _manage(env, "create_operator", "olga", "--password-file", str(password_file))
    assert created.returncode == 0, created.stdout + created.stderr
    collected = _manage(env, "collectstatic", "--noinput")
    assert collected.returncode == 0, collected.stdout + collected.stderr

    command = _procfile_command("web")
    command[0] = str(Path(sys.executable).parent / Path(command[0]).name)  # this test's venv
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*command, "--bind", f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Booting worker" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gunicorn did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield {"url": f"http://127.0.0.1:{port}", "env": env, "static": tmp_path / "static"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_production_serves_hashed_compressed_static_files_and_redirects_plain_http(production_web):
    url = production_web["url"]
    # Without the proxy's header the request counts as plain HTTP: redirected to https.
    plain = requests.get(f"{url}/admin/login/", allow_redirects=False, timeout=10)
    assert plain.status_code == 301
    assert plain.headers["Location"].startswith("https://")

    page = requests.get(f"{url}/admin/login/", headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert page.status_code == 200
    assert "Strict-Transport-Security" in page.headers
    css = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page.text)
    assert css, "the admin names its CSS by hashed name (manifest storage)"
    asset = requests.get(url + css.group(1), headers={"X-Forwarded-Proto": "https", "Accept-Encoding": "gzip"},
                         timeout=10)
    assert asset.status_code == 200
    assert asset.headers["Content-Type"].startswith("text/css")
    assert asset.headers.get("Content-Encoding") == "gzip"
    assert "immutable" in asset.headers["Cache-Control"]
    assert "--header-bg" in asset.text


@pytest.mark.browser
@pytest.mark.skipif(sync_playwright is None or not Path(CHROMIUM).exists(),
                    reason=f"Chromium (at {CHROMIUM}) or Playwright missing: browser test skipped")
def test_an_admin_page_under_gunicorn_in_production_loads_with_its_css(production_web, browser):  # noqa: F811
    context = browser.new_context(viewport={"width": 1366, "height": 900},
                                  extra_http_headers={"X-Forwarded-Proto": "https"})
    failed: list[str] = []
    page = context.new_page()
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        # localhost, not 127.0.0.1: Chromium keeps the production profile's Secure cookies
        # over plain http only for localhost (the real deployment is https end to end).
        page.goto(f"{production_web['url'].replace('127.0.0.1', 'localhost')}/admin/login/?next=/admin/registry/service/")
        assert page.evaluate("getComputedStyle(document.querySelector('#header')).backgroundColor") \
            == ADMIN_HEADER_BG
        page.fill("#id_username", "olga")
        page.fill("#id_password", "a-long-production-password")
        page.click("input[type=submit]")
        page.wait_for_url(re.compile(r"^http://localhost:\d+/admin/registry/service/$"))
        assert page.evaluate("getComputedStyle(document.querySelector('#header')).backgroundColor") \
            == ADMIN_HEADER_BG
        # The changelist's own stylesheet too: the result table is styled, not a bare HTML table.
        assert page.evaluate("document.styleSheets.length") >= 3
        assert page.locator("#changelist").is_visible()
        assert failed == [], failed
    finally:
        context.close()
