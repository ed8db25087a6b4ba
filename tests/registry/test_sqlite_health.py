"""The embedded default (SQLite, no Redis): ``check_health --all`` records its results.

The sweep's bulk write branches on the database vendor (COPY on PostgreSQL,
bulk_create elsewhere); this runs the command as the demo does, in its own process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.registry.loopback import Loopback, Reply

ROOT = Path(__file__).resolve().parents[2]

SETUP = textwrap.dedent("""
    import sys
    import django
    django.setup()
    from django.core.management import call_command
    from registry.models import Service
    call_command("migrate", verbosity=0)
    for name, path in (("up", "/ok"), ("down", "/fail")):
        Service.objects.create(name=name, type="PLANNING_SYSTEM", url=sys.argv[1],
                               health_url=sys.argv[1] + path)
""")

REPORT = textwrap.dedent("""
    import django
    django.setup()
    from registry.models import HealthSnapshot, Service, StatusChange
    print(sorted(Service.objects.values_list("name", "status")),
          HealthSnapshot.objects.filter(service__name="up").count(),
          StatusChange.objects.count())
""")


def test_check_health_all_writes_snapshots_and_changes_on_sqlite(tmp_path):
    server = Loopback(routes={"/ok": Reply(200, {"status": "ok"}), "/fail": Reply(500, "boom")})
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        PORTAL_VAR_DIR=str(tmp_path / "var"),
        DJANGO_SETTINGS_MODULE="berrys_portal.settings",
        DJANGO_ENV="development",
    )

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    try:
        setup = run("-c", SETUP, server.url)
        assert setup.returncode == 0, setup.stderr[-3000:]
        check = run("manage.py", "check_health", "--all")
        assert check.returncode == 0, check.stderr[-3000:]
        assert "status changes 2" in check.stdout
        report = run("-c", REPORT)
    finally:
        server.stop()
    assert report.returncode == 0, report.stderr[-3000:]
    assert report.stdout.split("\n")[-2] == "[('down', 'critical'), ('up', 'passing')] 1 2"
