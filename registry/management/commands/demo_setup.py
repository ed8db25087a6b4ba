"""Prepare a demo start: the operator account, the demo API key, fresh breakers.

Safe to run on every ``make demo``: an existing operator keeps its password (so a
logged-in browser stays logged in: Django ends sessions when the password hash
changes), the demo key in ``--api-key-file`` is reused while it is valid, and
only when it is not is a new one minted (earlier demo keys are revoked).
Never under the production profile: it makes a staff account with a known password.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from registry.auth import api_key_create, api_key_revoke, hash_key
from registry.breakers import breaker_forget
from registry.models import ApiKey, Service

DEMO_KEY_NAME = "demo"
DEMO_KEY_SCOPES = ["gateway", "registry:read", "registry:write", "workflows"]
DEMO_KEY_GATEWAY_ALLOW = ["AGENT_ORCHESTRATOR:POST"]  # the driver creates tasks through the gateway
DEMO_KEY_DAYS = 30


class Command(BaseCommand):
    help = "Create the demo operator (kept if it exists), reuse or mint the demo API key, close breakers."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("DEMO_USERNAME", "operator"))
        parser.add_argument("--password", default=os.environ.get("DEMO_PASSWORD", "berrys-demo"))
        parser.add_argument("--api-key-file", type=Path, default=None,
                            help="Where the demo key lives (reused while valid), e.g. var/demo/api.key.")

    def handle(self, *args, username: str, password: str, api_key_file: Path | None, **options):
        if settings.PRODUCTION:
            # A staff account whose password is in the README is a way in for anyone.
            raise CommandError(
                "demo_setup refuses to run under DJANGO_ENV=production: it creates a staff account "
                "with a known password. Create operators with `manage.py createsuperuser` or in the admin."
            )
        self._operator(username, password)
        if api_key_file is not None:
            self._api_key(api_key_file)
        # A new demo starts with closed breakers: an earlier demo's injected fault may have
        # left Model Orchestration's open, and the store (database or Redis) outlives processes.
        for pk in Service.objects.values_list("pk", flat=True):
            breaker_forget(service_id=pk)

    def _operator(self, username: str, password: str) -> None:
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": False}
        )
        if created:
            user.set_password(password)
            user.save()
        elif not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        operators = Group.objects.filter(name="Operators").first()
        if operators is not None:
            user.groups.add(operators)
        if created:
            self.stdout.write(f"Created demo operator: username={username} password={password}")
        else:
            self.stdout.write(f"Demo operator {username} kept (its password is unchanged)")

    def _api_key(self, path: Path) -> None:
        now = timezone.now()
        try:
            plain = path.read_text().strip()
        except OSError:
            plain = ""
        active = ApiKey.objects.filter(name=DEMO_KEY_NAME, revoked_at__isnull=True)
        if plain:
            current = active.filter(key_hash=hash_key(plain)).first()
            if (current is not None
                    and (current.expires_at is None or current.expires_at > now + timedelta(days=1))
                    and sorted(current.scopes) == sorted(DEMO_KEY_SCOPES)
                    and sorted(current.gateway_allow or []) == sorted(DEMO_KEY_GATEWAY_ALLOW)):
                self.stdout.write(f"Demo API key {current.prefix}… reused (expires {current.expires_at:%Y-%m-%d})"
                                  if current.expires_at else f"Demo API key {current.prefix}… reused")
                return
        revoked = api_key_revoke(keys=active, actor="command demo_setup")
        key, plain = api_key_create(name=DEMO_KEY_NAME, scopes=DEMO_KEY_SCOPES,
                                    gateway_allow=DEMO_KEY_GATEWAY_ALLOW,
                                    expires_at=now + timedelta(days=DEMO_KEY_DAYS), actor="command demo_setup")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(plain + "\n")
        path.chmod(0o600)
        self.stdout.write(f"Demo API key {key.prefix}… written to {path} (expires in {DEMO_KEY_DAYS} days"
                          + (f"; {revoked} earlier demo key(s) revoked)" if revoked else ")"))
