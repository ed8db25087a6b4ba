"""Personas for the admin: an operator, a viewer (both staff, in their groups)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from dashboard.roles import OPERATORS, VIEWERS


def _staff(username: str, group: str):
    user = get_user_model().objects.create_user(username=username, password="pw-" + username, is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def operator(db):
    return _staff("olivia", OPERATORS)


@pytest.fixture
def viewer(db):
    return _staff("victor", VIEWERS)


@pytest.fixture
def operator_client(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(viewer) -> Client:
    client = Client()
    client.force_login(viewer)
    return client
