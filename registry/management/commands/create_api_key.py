"""Create an API key; the plain key is printed alone on the last line of stdout (shown once)."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from registry.auth import api_key_create
from registry.scopes import ALIASES, DEPRECATED_NAMES, SCOPES


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class Command(BaseCommand):
    help = (
        "Create an API key, e.g. --name planning-system --scopes registry:read,registry:write "
        "--service-types PLANNING_SYSTEM [--expires-in-days 90]."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Who uses the key.")
        parser.add_argument(
            "--scopes", required=True,
            help=f"Comma-separated: {', '.join(sorted(SCOPES))} "
                 f"(old names {', '.join(sorted(ALIASES))} still accepted, deprecated).",
        )
        parser.add_argument("--service-types", help="Comma-separated types it may register. Default: any.")
        parser.add_argument("--name-patterns", help="Comma-separated globs its service names must match.")
        parser.add_argument(
            "--gateway-allow",
            help="Comma-separated TYPE:METHOD entries for the gateway scope (* for any), e.g. AGENT_ORCHESTRATOR:POST.",
        )
        parser.add_argument("--max-instances", type=int, help="Default: REGISTRY_KEY_MAX_INSTANCES.")
        parser.add_argument("--max-hosts", type=int, help="Default: REGISTRY_KEY_MAX_HOSTS.")
        parser.add_argument("--expires-in-days", type=int, default=None, help="Default: never expires.")

    def handle(self, *args, name: str, scopes: str, expires_in_days: int | None, **options):
        scope_list = _csv(scopes)
        if not scope_list:
            raise CommandError("--scopes needs at least one scope.")
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        old = sorted(set(scope_list) & DEPRECATED_NAMES)
        if old:
            self.stderr.write(
                "Deprecated scope name(s): "
                + ", ".join(f"{o} (now {'+'.join(ALIASES[o])})" for o in old)
            )
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        try:
            key, plain = api_key_create(
                name=name, scopes=scope_list, expires_at=expires_at,
                service_types=_csv(options.get("service_types")),
                name_patterns=_csv(options.get("name_patterns")),
                gateway_allow=_csv(options.get("gateway_allow")),
                max_instances=options.get("max_instances"), max_hosts=options.get("max_hosts"),
                actor="command create_api_key",
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        expiry = f"expires {key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at else "never expires"
        limits = "".join(
            f", {label} {','.join(value)}" for label, value in
            (("types", key.service_types), ("names", key.name_patterns), ("gateway", key.gateway_allow)) if value
        )
        self.stdout.write(
            f"Created API key {key.name!r} ({key.prefix}…), scopes {','.join(key.scopes)}{limits}, {expiry}."
        )
        self.stdout.write("Copy it now; it is stored hashed and not shown again:")
        self.stdout.write(plain)
