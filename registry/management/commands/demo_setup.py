"""Create (or reset) the demo operator and print its login (never under the production profile)."""

from __future__ import annotations

import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create the demo operator account (idempotent) and print its login."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("DEMO_USERNAME", "operator"))
        parser.add_argument("--password", default=os.environ.get("DEMO_PASSWORD", "berrys-demo"))

    def handle(self, *args, username: str, password: str, **options):
        if settings.PRODUCTION:
            # A staff account whose password is in the README is a way in for anyone.
            raise CommandError(
                "demo_setup refuses to run under DJANGO_ENV=production: it creates a staff account "
                "with a known password. Create operators with `manage.py createsuperuser` or in the admin."
            )
        user, created = get_user_model().objects.get_or_create(username=username)
        user.is_staff = True
        user.is_superuser = False
        user.set_password(password)
        user.save()
        operators = Group.objects.filter(name="Operators").first()
        if operators is not None:
            user.groups.add(operators)
        verb = "Created" if created else "Reset"
        self.stdout.write(f"{verb} demo operator: username={username} password={password}")
