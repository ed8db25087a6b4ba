"""Unknown API paths and wrong methods answer the API's JSON error shape in every profile.

With DEBUG on (the demo's development profile) Django would answer an unmatched path
with its HTML debug page; the URL conf's catch-all under the API prefixes prevents that.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.both_dbs

PATHS = ["/registry/nope", "/registry/services/1/nope", "/discovery/x/y/z", "/workflows/nope",
         "/gateway", "/api/nope", "/api"]


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "no-debug"])
@pytest.mark.parametrize("path", PATHS)
def test_unknown_api_paths_are_a_json_404(client, settings, debug, path):
    settings.DEBUG = debug
    response = client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": f"No endpoint at {path}.", "code": "not_found"}


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "no-debug"])
def test_a_wrong_method_on_an_api_path_is_a_json_405(read_client, settings, debug):
    settings.DEBUG = debug
    response = read_client.delete("/workflows/runs")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "method_not_allowed"


def test_admin_paths_keep_djangos_html_404(admin_client, settings):
    settings.DEBUG = False
    response = admin_client.get("/admin/nope/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("method", ["post", "patch", "put", "delete"])
def test_a_write_to_an_unknown_api_path_is_a_json_404_not_a_csrf_page(method):
    """API callers send no CSRF token: a write to an unknown path is the API's 404, not Django's
    HTML CSRF 403 (found by the schema fuzzer: PATCH /registry/services/-1)."""
    from django.test import Client

    response = getattr(Client(enforce_csrf_checks=True), method)("/registry/services/-1")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
