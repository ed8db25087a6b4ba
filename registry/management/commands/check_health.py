"""Run one health sweep in-process and print a table (the operator's "check now")."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from registry import health
from registry.models import Service


class Command(BaseCommand):
    help = (
        "Probe services now and print the results. Default: the services that are due. "
        "--service ID (repeatable) or --all: probe those at once, even through an open breaker."
    )

    def add_arguments(self, parser):
        parser.add_argument("--service", type=int, action="append", dest="service_ids", metavar="ID")
        parser.add_argument("--all", action="store_true", help="Probe every probed service now.")

    def handle(self, *args, service_ids=None, all=False, **options):
        if service_ids:
            missing = set(service_ids) - set(Service.objects.filter(id__in=service_ids).values_list("id", flat=True))
            if missing:
                raise CommandError(f"No service with id {', '.join(map(str, sorted(missing)))}")
            report = health.health_check_now(service_ids=service_ids)
        elif all:
            report = health.health_check_now()
        else:
            report = health.health_sweep(keep_rows=True)
            if report.skipped_locked:
                raise CommandError("Another sweep is running; try again in a few seconds or use --all.")
        rows = sorted(report.rows, key=lambda r: (r.service.type, r.service.name))
        header = f"{'ID':>6}  {'NAME':<30} {'TYPE':<22} {'STATUS':<9} {'PROBE':<9} {'HTTP':>4} {'MS':>8}  REASON"
        self.stdout.write(header)
        for r in rows:
            snap = r.snapshot
            http = str(snap.http_status) if snap and snap.http_status else "-"
            ms = f"{r.latency_ms:.1f}" if r.latency_ms is not None else "-"
            self.stdout.write(
                f"{r.service.pk:>6}  {r.service.name[:30]:<30} {r.service.type[:22]:<22} {r.status:<9} "
                f"{r.verdict:<9} {http:>4} {ms:>8}  {r.reason}"
            )
        self.stdout.write(
            f"probed {report.probed}, withheld (breaker open) {report.withheld}, trials {report.trials}, "
            f"status changes {report.changes}, TTL expired {report.ttl_expired}, "
            f"deregistered {report.deregistered} in {report.seconds:.2f} s"
        )
