"""Admin login throttling (django-axes): lock-out per (username, address), release by an operator or cool-off."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from dashboard.roles import OPERATORS, VIEWERS
from tests.personas import logged_in, staff_user

PASSWORD = "right-pass-123"

pytestmark = pytest.mark.both_dbs


@pytest.fixture
def throttle(settings, db):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(minutes=30)
    get_user_model().objects.create_user(username="olga", password=PASSWORD, is_staff=True)
    return settings


def _login(username: str, password: str, address: str = "127.0.0.5", **headers) -> int:
    response = Client(REMOTE_ADDR=address, **headers).post(
        "/admin/login/?next=/admin/", {"username": username, "password": password})
    if response.status_code == 429:
        assert "Too many failed logins" in response.content.decode()
    return response.status_code


def _lock_out(username: str = "olga", address: str = "127.0.0.5", **headers) -> None:
    codes = [_login(username, "wrong", address, **headers) for _ in range(3)]
    assert codes == [200, 200, 429]  # the form again twice, then the lock-out page


def test_the_right_password_is_refused_after_the_failure_limit_but_only_for_that_user_and_address(throttle):
    _lock_out()
    assert _login("olga", PASSWORD) == 429
    assert _login("olga", PASSWORD, address="127.0.0.6") == 302  # another address
    get_user_model().objects.create_user(username="ivan", password=PASSWORD, is_staff=True)
    assert _login("ivan", PASSWORD) == 302  # another user from the same address


def test_an_operator_releases_the_lock_in_the_admin_and_a_viewer_cannot(throttle):
    operator = logged_in(staff_user("oscar", OPERATORS))
    viewer = logged_in(staff_user("victor", VIEWERS))
    _lock_out()
    attempt = AccessAttempt.objects.get(username="olga")
    assert viewer.get("/admin/axes/accessattempt/").status_code == 403
    page = operator.get("/admin/axes/accessattempt/").content.decode()
    assert "olga" in page and "127.0.0.5" in page
    response = operator.post("/admin/axes/accessattempt/",
                                 {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"})
    assert response.status_code == 302
    assert _login("olga", PASSWORD) == 302


def test_the_lock_lifts_after_the_cool_off(throttle):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        _lock_out()
    with time_machine.travel(start + timedelta(minutes=29), tick=False):
        assert _login("olga", PASSWORD) == 429
    with time_machine.travel(start + timedelta(minutes=61), tick=False):
        # (the 429 at minute 29 was a failure during the lock-out: it restarted the cool-off)
        assert _login("olga", PASSWORD) == 302


def test_a_forged_x_forwarded_for_does_not_dodge_the_lock_unless_the_proxy_is_trusted(throttle):
    _lock_out()
    assert _login("olga", PASSWORD, HTTP_X_FORWARDED_FOR="10.9.9.9") == 429
    throttle.TRUST_PROXY_HEADERS = True
    # Behind the trusted proxy the address is the proxy's own (right-most) X-Forwarded-For entry.
    _lock_out(address="127.0.0.1", HTTP_X_FORWARDED_FOR="10.9.9.9, 192.0.2.7")
    assert _login("olga", PASSWORD, address="127.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.7") == 429
    assert _login("olga", PASSWORD, address="127.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.7, 192.0.2.8") == 302
