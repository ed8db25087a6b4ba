"""Give services an owner key in bulk (after upgrading, services registered before ownership have none).

    manage.py assign_service_owner --key bp_AbCdEfG --type PLANNING_SYSTEM [--name 'planning-*'] [--dry-run]

Only services without an owner are given one unless ``--include-owned`` is passed.
Every move goes through ``service_owner_set``, so each one is an audit row.
"""

from __future__ import annotations

import fnmatch

from django.core.management.base import BaseCommand, CommandError

from registry.models import ApiKey, Service
from registry.services import service_owner_set


class Command(BaseCommand):
    help = "Give services (ownerless by default) to an API key, by type and/or name glob; each move is audited."

    def add_arguments(self, parser):
        parser.add_argument("--key", required=True, help="The new owner: its prefix (as the admin shows it) or id.")
        parser.add_argument("--type", help="Only services of this type.")
        parser.add_argument("--name", help="Only services whose name matches this glob.")
        parser.add_argument("--include-owned", action="store_true", help="Also take services another key owns.")
        parser.add_argument("--dry-run", action="store_true", help="List what would move; change nothing.")

    def handle(self, *args, key: str, **options):
        owner = self._key(key)
        services = Service.objects.order_by("type", "name")
        if options.get("type"):
            services = services.filter(type=options["type"].upper())
        if not options.get("include_owned"):
            services = services.filter(owner__isnull=True)
        pattern = options.get("name")
        chosen = [s for s in services if not pattern or fnmatch.fnmatchcase(s.name, pattern)]
        for service in chosen:
            self.stdout.write(f"{'would give' if options['dry_run'] else 'giving'} {service} to {owner}")
            if not options["dry_run"]:
                service_owner_set(service=service, owner=owner, actor="command assign_service_owner")
        self.stdout.write(f"{len(chosen)} service(s){' (dry run)' if options['dry_run'] else ''}.")

    def _key(self, ref: str) -> ApiKey:
        keys = ApiKey.objects.filter(revoked_at__isnull=True)
        found = list(keys.filter(pk=int(ref))) if ref.isdigit() else list(keys.filter(prefix__startswith=ref[:10]))
        if len(found) != 1:
            raise CommandError(f"--key {ref!r} matches {len(found)} unrevoked keys; give a longer prefix or the id.")
        return found[0]
