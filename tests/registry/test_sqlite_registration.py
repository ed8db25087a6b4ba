"""The embedded default (SQLite) also gets one row from concurrent identical registrations."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import threading
    import django
    django.setup()
    from django.core.management import call_command
    from django.db import connections
    from rest_framework.test import APIClient
    from registry.auth import api_key_create
    from registry.models import Service

    call_command("migrate", verbosity=0)
    _, plain = api_key_create(name="racer", scopes=["register"])
    payload = {"name": "s", "type": "PLANNING_SYSTEM", "url": "http://127.0.0.1:9000",
               "tags": ["eu", "canary"]}
    barrier = threading.Barrier(10)
    codes = []

    def register():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Token " + plain)
        barrier.wait()
        codes.append(client.post("/registry/services", payload, format="json").status_code)
        connections.close_all()

    threads = [threading.Thread(target=register) for _ in range(10)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + plain)
    _, reader = api_key_create(name="reader", scopes=["read"])
    client.credentials(HTTP_AUTHORIZATION="Token " + reader)
    tagged = client.get("/registry/services?tag=eu&tag=canary").json()["count"]
    untagged = client.get("/registry/services?tag=eu&tag=us").json()["count"]
    print(sorted(codes), Service.objects.count(), tagged, untagged)
""")


def test_concurrent_registrations_and_tag_filters_work_on_sqlite(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        PORTAL_VAR_DIR=str(tmp_path / "var"),
        DJANGO_SETTINGS_MODULE="berrys_portal.settings",
        DJANGO_ENV="development",
    )
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    codes, rows, tagged, untagged = result.stdout.strip().splitlines()[-1].rsplit(" ", 3)
    assert codes == str([200] * 9 + [201])
    assert (rows, tagged, untagged) == ("1", "1", "0")
