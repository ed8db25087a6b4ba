"""Create an API key; the plain key is printed alone on the last line of stdout (shown once)."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from registry.auth import api_key_create


class Command(BaseCommand):
    help = "Create an API key, e.g. --name planning-system --scopes register,read [--expires-in-days 90]."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Who uses the key.")
        parser.add_argument("--scopes", required=True, help="Comma-separated: read, register, workflows, gateway.")
        parser.add_argument("--expires-in-days", type=int, default=None, help="Default: never expires.")

    def handle(self, *args, name: str, scopes: str, expires_in_days: int | None, **options):
        scope_list = [s.strip() for s in scopes.split(",") if s.strip()]
        if not scope_list:
            raise CommandError("--scopes needs at least one scope.")
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        try:
            key, plain = api_key_create(name=name, scopes=scope_list, expires_at=expires_at)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        expiry = f"expires {key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at else "never expires"
        self.stdout.write(f"Created API key {key.name!r} ({key.prefix}…), scopes {','.join(key.scopes)}, {expiry}.")
        self.stdout.write("Copy it now; it is stored hashed and not shown again:")
        self.stdout.write(plain)
