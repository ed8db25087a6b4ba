"""/metrics under gunicorn with several workers plus an outside (Celery-like) process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.dashboard.test_metrics import value
from tests.gunicorn import gunicorn_running

pytestmark = pytest.mark.slow



def _samples(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    (prom_dir / "stale_counter.db").write_bytes(b"left over from a previous start")
    with gunicorn_running(tmp_path, workers=2, env={"METRICS_ALLOWED_NETWORKS": "127.0.0.0/8"}) as server:
        yield {"url": server.url, "env": server.env, "dir": prom_dir, "log": server.log,
               "workers": server.workers}


def test_every_gunicorn_worker_reports_the_sum_of_all_processes_and_a_restart_keeps_it(gunicorn):
    assert not (gunicorn["dir"] / "stale_counter.db").exists()  # on_starting emptied the directory
    code = (
        "import django; django.setup()\n"
        "from berrys_portal import metrics\n"
        "for _ in range(3):\n"
        "    metrics.record_requeue(reason='lease_expired')\n"
        "metrics.observe_step(workflow='gw', step='s', duration_seconds=0.5, outcome='succeeded')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=gunicorn["env"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr

    session = requests.Session()
    session.headers["Connection"] = "close"  # spread the scrapes over both workers
    for _ in range(8):
        response = session.get(f"{gunicorn['url']}/metrics", timeout=10)
        assert response.status_code == 200
        samples = _samples(response.text)
        assert value(samples, "berrys_reconciler_requeues_total", reason="lease_expired") == 3
        assert value(samples, "berrys_workflow_step_duration_seconds_count",
                     workflow="gw", step="s", outcome="succeeded") == 1

    # A worker dies and is replaced: the counters written elsewhere are unaffected.
    os.kill(gunicorn["workers"][0], signal.SIGTERM)
    deadline = time.monotonic() + 20
    while len(re.findall(r"Booting worker with pid", gunicorn["log"].read_text())) < 3:
        assert time.monotonic() < deadline, gunicorn["log"].read_text()[-2000:]
        time.sleep(0.2)
    samples = _samples(session.get(f"{gunicorn['url']}/metrics", timeout=10).text)
    assert value(samples, "berrys_reconciler_requeues_total", reason="lease_expired") == 3


def test_a_chunked_body_without_a_length_is_refused_with_411_under_gunicorn(gunicorn):
    # Django reads a body by its Content-Length only: a chunked one would arrive empty and be
    # answered as if fields were missing. The portal says what is wrong instead.
    def chunks():
        yield b'{"name": "chunky", "type": "PLANNING_SYSTEM", '
        yield b'"url": "http://127.0.0.1:7001"}'

    response = requests.post(f"{gunicorn['url']}/registry/services", data=chunks(),
                             headers={"Content-Type": "application/json", "Authorization": "Token x"},
                             timeout=10)
    assert response.status_code == 411, response.text
    body = response.json()
    assert body["code"] == "length_required" and "Content-Length" in body["detail"]
