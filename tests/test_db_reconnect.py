"""The health check without SELECT 1: a database session ended under a running server is
replaced before the next request's first query, so that request succeeds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests import dbenv


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_the_next_request_after_the_databases_sessions_are_terminated_succeeds():
    port = _free_port()
    env = {**os.environ, **dbenv.broker_env(), "DATABASE_URL": dbenv.test_database_url(),
           "DJANGO_SETTINGS_MODULE": "berrys_portal.settings", "CONN_MAX_AGE": "600"}
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload", "--nothreading"],
        cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/health"
    try:
        for _ in range(100):
            try:
                first = requests.get(url, timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert first.json()["database"] is True

        def server_sessions() -> list[int]:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                               "AND pid <> pg_backend_pid()")
                return [row[0] for row in cursor.fetchall()]

        pids = server_sessions()
        assert pids, "the server keeps its connection between requests (CONN_MAX_AGE)"
        with connection.cursor() as cursor:  # only this test database's sessions, never another's
            cursor.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert not set(pids) & set(server_sessions())

        after = requests.get(url, timeout=10)
        assert after.status_code == 200 and after.json()["database"] is True
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_request_on_a_live_connection_sends_no_select_1(db, read_client):
    read_client.get("/discovery/PLANNING_SYSTEM")
    connection.health_check_done = False  # as at the start of a request that reuses the connection
    with CaptureQueriesContext(connection) as captured:
        connection.close_if_health_check_failed()
    assert captured.captured_queries == []
    assert connection.connection is not None and connection.health_check_done
