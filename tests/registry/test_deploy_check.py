"""The production profile passes ``manage.py check --deploy`` with no warnings, and refuses weak secrets."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS")}
    base.update(DJANGO_SETTINGS_MODULE="berrys_portal.settings", DJANGO_ENV="production", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=base, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_under_the_production_profile():
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING",
        SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="portal.example.com",
        REGISTRY_ALLOWED_NETWORKS="10.20.0.0/16",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stderr


def test_production_refuses_a_short_secret_key():
    result = _manage("check", SECRET_KEY="too-short", ALLOWED_HOSTS="portal.example.com",
                     REGISTRY_ALLOWED_NETWORKS="10.20.0.0/16")
    assert result.returncode != 0
    assert "SECRET_KEY must be at least 50 random characters" in result.stderr


def test_production_refuses_to_start_without_an_egress_allow_list():
    result = _manage("check", SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="portal.example.com")
    assert result.returncode != 0
    assert "REGISTRY_ALLOWED_NETWORKS must be set in production" in result.stderr
