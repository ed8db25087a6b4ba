"""``manage.py create_operator USERNAME``: a staff account in the Operators (or Viewers) group.

The first login of a fresh deployment, and any later one, without opening the
admin's user pages. The password is asked for twice (or read from a file for
scripts), checked against ``AUTH_PASSWORD_VALIDATORS`` and never printed.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from berrys_portal.roles import OPERATORS, VIEWERS


class Command(BaseCommand):
    help = "Create (or update) a staff user in the Operators group (--viewer: the Viewers group)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--viewer", action="store_true", help="Read-only: the Viewers group.")
        parser.add_argument("--password-file", type=Path, default=None,
                            help="Read the password from this file (first line) instead of asking.")

    def handle(self, *args, username: str, email: str, viewer: bool, password_file: Path | None, **options):
        group_name = VIEWERS if viewer else OPERATORS
        group = Group.objects.filter(name=group_name).first()
        if group is None:
            raise CommandError(f"The {group_name} group does not exist yet: run manage.py migrate first.")
        user_model = get_user_model()
        existing = user_model.objects.filter(username=username).first()
        password = self._password(password_file, required=existing is None)
        user = existing or user_model(username=username)
        if password is not None:
            try:
                validate_password(password, user)
            except ValidationError as exc:
                raise CommandError("Password refused: " + " ".join(exc.messages)) from None
            user.set_password(password)
        user.is_staff = True
        if email:
            user.email = email
        with transaction.atomic():
            user.save()
            user.groups.remove(*Group.objects.filter(name__in=[OPERATORS, VIEWERS]).exclude(pk=group.pk))
            user.groups.add(group)
        verb = "Updated" if existing else "Created"
        self.stdout.write(f"{verb} {username} in the {group_name} group (log in at /admin/).")

    def _password(self, path: Path | None, *, required: bool) -> str | None:
        if path is not None:
            try:
                lines = path.read_text().splitlines()
            except OSError as exc:
                raise CommandError(f"--password-file {path}: {exc.strerror}") from None
            if not lines or not lines[0]:
                raise CommandError(f"--password-file {path} is empty")
            return lines[0]
        if not sys.stdin.isatty():
            if required:
                raise CommandError("No terminal to ask for the password: use --password-file.")
            return None  # an existing user keeps their password
        first = getpass.getpass("Password: ")
        if not first and not required:
            return None
        if first != getpass.getpass("Password (again): "):
            raise CommandError("The two passwords differ.")
        return first
