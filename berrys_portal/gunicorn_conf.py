"""gunicorn settings for the portal: ``gunicorn -c berrys_portal/gunicorn_conf.py berrys_portal.wsgi``.

Wires prometheus-client's multi-process mode: the directory is emptied when the
master starts (no worker exists yet) and a worker's live files are released
when it exits. It listens on PORTAL_BIND (default 127.0.0.1:8090).
"""

from __future__ import annotations

import os

from berrys_portal.env import env_bind

# Django settings set PROMETHEUS_MULTIPROC_DIR too, but the master imports this
# file before Django: use the same default.
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    os.path.join(os.environ.get("PORTAL_VAR_DIR", os.path.join(os.getcwd(), "var")), "prometheus"),
)

# PORTAL_BIND, the same variable (and check) as the Django setting: loopback unless told
# otherwise, with a TLS-terminating proxy in front. The command line's --bind still wins.
bind = env_bind("PORTAL_BIND", f"127.0.0.1:{os.environ.get('PORTAL_PORT') or '8090'}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
accesslog = "-"


def on_starting(server) -> None:
    from berrys_portal.metrics import metrics_reset

    metrics_reset()


def child_exit(server, worker) -> None:
    from berrys_portal.metrics import process_dead

    process_dead(worker.pid)
