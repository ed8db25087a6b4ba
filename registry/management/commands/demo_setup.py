"""Create (or reset) the demo operator and print its login."""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the demo operator account (idempotent) and print its login."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("DEMO_USERNAME", "operator"))
        parser.add_argument("--password", default=os.environ.get("DEMO_PASSWORD", "berrys-demo"))

    def handle(self, *args, username: str, password: str, **options):
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
