"""Blocking watches on the native API: GET /registry/services and GET /discovery/{type}?all=1."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from django.db import connection

from registry.auth import api_key_create
from registry.models import HealthStatus, Service
from registry.watch import INDEX_HEADER

pytestmark = [pytest.mark.both_dbs, pytest.mark.usefixtures("fresh_index_feed")]


@pytest.fixture
def session(transactional_db):
    _, key = api_key_create(name="watcher", scopes=["registry:read"])
    with requests.Session() as s:
        s.headers["Authorization"] = f"Token {key}"
        yield s


def _later(seconds: float, fn) -> threading.Thread:
    def run():
        time.sleep(seconds)
        fn()
        connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _planner(name: str = "planner-1", **fields) -> Service:
    return Service.objects.create(name=name, type="PLANNING_SYSTEM", url="http://127.0.0.1:8911",
                                  status=HealthStatus.PASSING, **fields)


def test_the_service_list_watch_wakes_on_a_registration(live_server, session):
    first = session.get(live_server.url + "/registry/services", timeout=10)
    index = int(first.headers[INDEX_HEADER])
    changer = _later(0.3, lambda: _planner())
    started = time.monotonic()
    response = session.get(live_server.url + "/registry/services", params={"index": index, "wait": "20s"},
                           timeout=30)
    elapsed = time.monotonic() - started
    changer.join()
    assert response.status_code == 200
    assert int(response.headers[INDEX_HEADER]) > index
    assert [s["name"] for s in response.json()["results"]] == ["planner-1"]
    assert elapsed < 2.0


def test_the_service_list_watch_returns_after_wait_with_the_same_index(live_server, session):
    _planner()
    index = int(session.get(live_server.url + "/registry/services", timeout=10).headers[INDEX_HEADER])
    started = time.monotonic()
    response = session.get(live_server.url + "/registry/services", params={"index": index, "wait": "800ms"},
                           timeout=30)
    elapsed = time.monotonic() - started
    assert int(response.headers[INDEX_HEADER]) == index
    assert 0.8 <= elapsed < 0.8 + 0.05 + 1.0


def test_a_discovery_watch_follows_its_type_only(live_server, session):
    planner = _planner()
    url = live_server.url + "/discovery/PLANNING_SYSTEM"
    first = session.get(url, params={"all": "1"}, timeout=10)
    index = int(first.headers[INDEX_HEADER])
    assert first.json()["count"] == 1
    Service.objects.create(name="c", type="PROJECT_COORDINATOR", url="http://127.0.0.1:8912")
    quiet = session.get(url, params={"all": "1", "index": index, "wait": "400ms"}, timeout=10)
    assert int(quiet.headers[INDEX_HEADER]) == index  # another type changed: no wake-up

    changer = _later(0.3, lambda: Service.objects.filter(pk=planner.pk).update(status=HealthStatus.CRITICAL))
    woken = session.get(url, params={"all": "1", "index": index, "wait": "20s"}, timeout=30)
    changer.join()
    assert woken.status_code == 503  # no eligible instance left: the watcher still gets the index
    assert int(woken.headers[INDEX_HEADER]) > index


@pytest.mark.parametrize(("params", "field"), [({"index": "-1"}, "index"), ({"index": "1", "wait": "soon"}, "wait")])
def test_bad_watch_parameters_are_a_400(live_server, session, params, field):
    response = session.get(live_server.url + "/registry/services", params=params, timeout=10)
    assert response.status_code == 400
    assert field in response.json()["errors"]
