"""What the multi-host harness runs inside a network namespace (``python -m tests.multihost.node``).

Subcommands (each prints one JSON line when it has something to say):

* ``sims HOST BASE_PORT LATENCY_MS`` — the five simulated Berrys services on HOST, until killed;
* ``setup SIM_HOST BASE_PORT``       — migrate, install the beat rows, register the simulators;
* ``start N``                        — start N project_creation runs; prints their ids;
* ``report IDS_FILE``                — every run (children included): status, which hosts ran
  steps, tries lost, late completions refused.

The portal settings come from the environment the harness passes (DATABASE_URL etc.).
"""

from __future__ import annotations

import json
import os
import sys
import time


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
    import django

    django.setup()


def sims(host: str, base_port: int, latency_ms: float) -> None:
    from simulators.runner import SimulatorStack

    stack = SimulatorStack(portal_url=None, api_key=None, base_port=base_port, host=host)
    stack.start()
    for svc in stack.services:
        svc.set_faults({"latency_ms": latency_ms})
    print(json.dumps({"ready": [svc.url for svc in stack.services]}), flush=True)
    while True:
        time.sleep(3600)


def setup(sim_host: str, base_port: int) -> None:
    _django()
    from django.core.management import call_command

    from registry.models import HealthStatus, Service
    from simulators.services import ALL_SERVICES

    call_command("migrate", verbosity=0)
    call_command("setup_periodic_tasks", verbosity=0)
    for i, cls in enumerate(ALL_SERVICES):
        url = f"http://{sim_host}:{base_port + i}"
        Service.objects.update_or_create(name=cls.slug, defaults=dict(
            type=cls.service_type, url=url, health_url=url + "/health", status=HealthStatus.PASSING))
    print(json.dumps({"setup": "ok"}), flush=True)


def start(n: int) -> None:
    _django()
    from workflows.engine import run_start

    tag = os.urandom(3).hex()
    ids = [str(run_start(workflow="project_creation", input={"name": f"mh-{tag}-{i}"},
                         triggered_by="multihost")[0].pk) for i in range(n)]
    print(json.dumps({"ids": ids}), flush=True)


def report(ids_file: str) -> None:
    _django()
    from django.db.models import Q

    from workflows.models import RUN_FINISHED, AttemptOutcome, RunEvent, StepAttempt, WorkflowRun

    with open(ids_file) as f:
        ids = json.load(f)
    parents = list(WorkflowRun.objects.filter(pk__in=ids).values_list("pk", "status", "context"))
    children = [c.get("planning", {}).get("run_id") for _, _, c in parents]
    every = WorkflowRun.objects.filter(Q(pk__in=ids) | Q(pk__in=[c for c in children if c]))
    statuses = list(every.values_list("status", flat=True))
    attempts = StepAttempt.objects.filter(step__run__in=every)
    hosts: dict[str, int] = {}
    for worker in attempts.exclude(outcome=AttemptOutcome.WORKER_LOST).values_list("worker", flat=True):
        host = worker.rsplit(":", 1)[0]
        hosts[host] = hosts.get(host, 0) + 1
    print(json.dumps({
        "runs": len(statuses),
        "expected": 2 * len(ids),
        "finished": sum(s in RUN_FINISHED for s in statuses) if all(children) else 0,
        "succeeded": sum(s == "succeeded" for s in statuses),
        "attempts_by_host": hosts,
        "worker_lost": attempts.filter(outcome=AttemptOutcome.WORKER_LOST).count(),
        "in_flight": attempts.filter(outcome=AttemptOutcome.SENT).count(),
        "late_refused": RunEvent.objects.filter(run__in=every, kind=RunEvent.Kind.LATE_REFUSED).count(),
        "requeued": RunEvent.objects.filter(run__in=every, kind=RunEvent.Kind.REQUEUED).count(),
    }), flush=True)


def main() -> None:
    cmd, *args = sys.argv[1:]
    if cmd == "sims":
        sims(args[0], int(args[1]), float(args[2]))
    elif cmd == "setup":
        setup(args[0], int(args[1]))
    elif cmd == "start":
        start(int(args[0]))
    elif cmd == "report":
        report(args[0])
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
