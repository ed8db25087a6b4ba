"""Admin personas shared by the test suites: staff users in a group, logged-in clients."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client


def staff_user(username: str, group: str):
    """A staff user in ``group`` (Operators or Viewers, created by the registry's migration)."""
    user = get_user_model().objects.create_user(username=username, password="pw-" + username, is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client
