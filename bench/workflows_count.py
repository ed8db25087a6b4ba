"""Count what one 7-step run costs the engine: SQL statements and Redis commands (prints them).

Run from the repository root (also works on an export of an older commit, for a before/after)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_wf_bench REDIS_URL=redis://127.0.0.1:6379/3 \\
        .venv/bin/python -m bench.workflows_count

One run of ``bench/workflows.py``'s workflow is driven in this process, as a worker would
(one call with an inline budget where the engine has one, else one call per step), with every
statement captured (``WORKFLOW_PREPARED_STATEMENTS`` off, so they go through Django's cursor)
and every Redis command counted (breaker and broker publishes; a real worker also consumes and
acks each message). The second of two runs is counted (the first fills the client's views).
"""

from __future__ import annotations

import os
import threading
import uuid
from http.server import ThreadingHTTPServer

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
os.environ.setdefault("DEBUG", "0")
os.environ["WORKFLOW_QUEUE"] = f"wf-count-{uuid.uuid4().hex[:6]}"

from bench.workflows import STEPS, Stub, _ensure_database  # noqa: E402 - sets Django up


def main() -> None:
    import redis
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    import workflows.engine as engine
    from berrys_portal.celery import app
    from registry.models import HealthStatus, Service
    from workflows.models import WorkflowRun

    _ensure_database()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Service.objects.filter(type="BENCH_STUB").delete()
    Service.objects.create(name="bench-stub", type="BENCH_STUB", url=f"http://127.0.0.1:{server.server_address[1]}",
                           status=HealthStatus.PASSING)
    settings.WORKFLOW_PREPARED_STATEMENTS = False
    commands = [0]
    for cls in (redis.client.Redis, redis.client.Pipeline):
        name = "execute" if cls is redis.client.Pipeline else "execute_command"
        real = getattr(cls, name)

        def spy(self, *args, _real=real, **kwargs):
            commands[0] += 1
            return _real(self, *args, **kwargs)

        setattr(cls, name, spy)
    inline = "inline_seconds" in engine.step_execute.__code__.co_varnames

    def one_run():
        run, _ = engine.run_start(workflow="bench_seven", input={}, triggered_by="count")
        ids = list(run.steps.order_by("index").values_list("pk", flat=True))
        commands[0] = 0
        with CaptureQueriesContext(connection) as captured:
            if inline:
                engine.step_execute(step_id=ids[0], inline_seconds=60)
            else:
                for step_id in ids:
                    engine.step_execute(step_id=step_id)
        return [q["sql"] for q in captured.captured_queries], commands[0]

    try:
        one_run()
        statements, redis_commands = one_run()
    finally:
        WorkflowRun.objects.filter(triggered_by="count").delete()
        Service.objects.filter(type="BENCH_STUB").delete()
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(settings.WORKFLOW_QUEUE)
        server.shutdown()
    print(f"{'inline' if inline else 'one message per step'}: {len(statements)} SQL statements for {STEPS} steps "
          f"({len(statements) / STEPS:.2f} per step), {redis_commands} Redis commands "
          f"({redis_commands / STEPS:.2f} per step)")
    for sql in statements:
        print("   ", " ".join(sql.split())[:100])


if __name__ == "__main__":
    main()
