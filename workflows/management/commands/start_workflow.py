"""``manage.py start_workflow NAME --input JSON [--wait SECONDS]``: start a run from the shell."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from berrys_portal.errors import PortalError
from berrys_portal.json_input import json_loads_checked
from workflows.engine import run_start
from workflows.models import RUN_FINISHED, RunStatus, WorkflowRun


class Command(BaseCommand):
    help = "Start a workflow run; with --wait, wait for it and print its final status."

    def add_arguments(self, parser):
        parser.add_argument("workflow", help="Definition name, e.g. project_planning.")
        parser.add_argument("--input", default="{}", help="The run's input as a JSON object.")
        parser.add_argument("--idempotency-key", default=None)
        parser.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                            help="Wait up to this long for the run to finish (or to wait for a human).")

    def handle(self, *args, **options):
        try:
            data = json_loads_checked(options["input"])  # the API's rule: depth, no NUL/lone surrogates
        except PortalError as exc:
            raise CommandError(f"--input: {exc.message}") from None
        except ValueError as exc:
            raise CommandError(f"--input is not valid JSON: {exc}") from None
        try:
            run, created = run_start(workflow=options["workflow"], input=data,
                                     idempotency_key=options["idempotency_key"],
                                     triggered_by="manage.py start_workflow")
        except PortalError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"{'started' if created else 'existing'} run {run.pk}")
        if options["wait"] is None:
            return
        deadline = time.monotonic() + options["wait"]
        stop = (*RUN_FINISHED, RunStatus.WAITING)
        while True:
            run = WorkflowRun.objects.get(pk=run.pk)
            if run.status in stop or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        self.stdout.write(f"status: {run.status}")
        if run.error:
            self.stdout.write(f"error: {run.error}")
        if run.status == RunStatus.FAILED:
            raise CommandError(f"run {run.pk} failed")
