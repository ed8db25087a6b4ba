"""The first steps of a deployment: a database that is not there yet, and the first operator."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from berrys_portal.roles import OPERATORS, VIEWERS

ROOT = Path(__file__).resolve().parents[2]


def _env(database_url: str) -> dict[str, str]:
    db = settings.DATABASES["default"]
    assert db["ENGINE"].endswith("postgresql")
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "berrys_portal.settings", "DJANGO_ENV": "development",
            "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}


def _server() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}"


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_migrate_on_a_missing_database_says_how_to_create_it_in_one_line():
    name = f"portal_missing_{uuid.uuid4().hex[:8]}"
    result = subprocess.run([sys.executable, "manage.py", "migrate"], cwd=ROOT, env=_env(f"{_server()}/{name}"),
                            capture_output=True, text=True, timeout=120)
    line = _one_line(result)
    assert f'database "{name}" does not exist' in line
    assert f"createdb -h {settings.DATABASES['default']['HOST']}" in line
    assert "manage.py migrate" in line


def test_a_command_on_an_unreachable_server_says_so_in_one_line():
    result = subprocess.run([sys.executable, "manage.py", "check_health", "--all"], cwd=ROOT,
                            env=_env("postgres://postgres@127.0.0.1:1/portal"),
                            capture_output=True, text=True, timeout=120)
    assert "cannot connect to PostgreSQL at 127.0.0.1:1 (Connection refused)" in _one_line(result)


def test_traceback_flag_still_shows_the_original_error():
    result = subprocess.run([sys.executable, "manage.py", "migrate", "--traceback"], cwd=ROOT,
                            env=_env(f"{_server()}/portal_missing_{uuid.uuid4().hex[:8]}"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "OperationalError" in result.stderr


@pytest.mark.slow
def test_gunicorn_refuses_to_start_on_a_missing_database_with_one_line(tmp_path):
    name = f"portal_missing_{uuid.uuid4().hex[:8]}"
    env = {**_env(f"{_server()}/{name}"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "berrys_portal/gunicorn_conf.py",
         "--bind", "127.0.0.1:0", "berrys_portal.wsgi:application"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert f'database "{name}" does not exist' in result.stderr
    assert "Traceback" not in result.stderr
    assert "Booting worker" not in result.stderr


def test_create_operator_makes_a_staff_user_in_the_operators_group(db, tmp_path):
    password = tmp_path / "pw"
    password.write_text("correct-horse-battery-staple\n")
    call_command("create_operator", "olga", "--email", "olga@example.com", "--password-file", str(password))
    user = get_user_model().objects.get(username="olga")
    assert user.is_staff and not user.is_superuser
    assert list(user.groups.values_list("name", flat=True)) == [OPERATORS]
    assert user.check_password("correct-horse-battery-staple")
    assert user.has_perm("dashboard.operate_run")

    # Again with --viewer: the same account moves to the Viewers group and keeps its password.
    call_command("create_operator", "olga", "--viewer")  # no terminal under pytest: no prompt
    user.refresh_from_db()
    assert list(user.groups.values_list("name", flat=True)) == [VIEWERS]
    assert user.check_password("correct-horse-battery-staple")
    assert not get_user_model().objects.get(pk=user.pk).has_perm("dashboard.operate_run")


def test_create_operator_refuses_a_weak_password(db, tmp_path):
    password = tmp_path / "pw"
    password.write_text("12345678\n")
    with pytest.raises(CommandError, match="Password refused: .*too common"):
        call_command("create_operator", "olga", "--password-file", str(password))
    assert not get_user_model().objects.filter(username="olga").exists()
