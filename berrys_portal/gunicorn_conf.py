"""gunicorn settings for the portal: ``gunicorn -c berrys_portal/gunicorn_conf.py berrys_portal.wsgi``.

Wires prometheus-client's multi-process mode: the directory is emptied when the
master starts (no worker exists yet) and a worker's live files are released
when it exits. It listens on PORTAL_BIND (default 127.0.0.1:8090).
"""

from __future__ import annotations

import os

from berrys_portal import gunicorn_errors
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
# Threads per worker: a gateway call waiting on a slow service holds a thread, not the
# process. The gateway takes at most GATEWAY_MAX_CONCURRENT (default 4) of them per process,
# so the rest of the API (/health, discovery, registration) always finds a free thread.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
accesslog = "-"

# gunicorn's own refusals (beyond the limits below, malformed requests) answer in the API's
# JSON shape too instead of its HTML page. Installed here, in the master, before workers fork.
gunicorn_errors.install()

# Above the portal's own limits (settings API_MAX_REQUEST_LINE_BYTES 4094, API_MAX_HEADER_BYTES
# 8190, API_MAX_HEADERS 100), so a request between the two is answered by
# berrys_portal.middleware.RequestLimitsMiddleware in the API's JSON shape (414/431) and
# not by gunicorn's HTML 400. 8190 is the largest request line gunicorn accepts as a
# limit (0 would mean none at all); beyond these gunicorn answers itself (JSON, see above).
limit_request_line = 8190
limit_request_field_size = 16384
limit_request_fields = 200


def on_starting(server) -> None:
    from berrys_portal.metrics import metrics_reset

    metrics_reset()
    _refuse_without_database(server)


def _refuse_without_database(server) -> None:
    """Stop with one line when the database is missing, unreachable or never migrated:
    otherwise the workers boot and every request is a 500 with a driver traceback."""
    import sys

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
    django.setup()
    from berrys_portal.dbcheck import database_check

    problem = database_check()
    if problem:
        server.log.error(problem)
        sys.exit(1)


def child_exit(server, worker) -> None:
    from berrys_portal.metrics import process_dead

    process_dead(worker.pid)
