"""Top-level URLs. Each app owns its own paths; API paths work with and without a trailing slash."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from berrys_portal.errors import json_page_not_found
from registry.gateway import GatewayView

urlpatterns = [
    path("admin/dashboard/", include("dashboard.admin_urls")),
    path("admin/", admin.site.urls),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its init script from this URL (?script): no inline script for the CSP.
    re_path(r"^api/docs/?$", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    re_path(r"^api/redoc/?$", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("", include("dashboard.urls")),
    path("", include("registry.urls")),
    path("workflows/", include("workflows.urls")),
    re_path(r"^gateway/(?P<service_type>[^/]+)/(?P<path>.*)$", GatewayView.as_view(), name="gateway"),
    # Last: any other path under the API's prefixes is the API's JSON 404 in every profile
    # (with DEBUG on, as in the demo, Django would answer its HTML debug page instead).
    # CSRF-exempt: it changes nothing, and a POST/PATCH to an unknown API path must get this 404
    # (JSON), not the CSRF middleware's HTML 403.
    re_path(r"^(?:registry|discovery|workflows|gateway|api)(?:/.*)?$", csrf_exempt(json_page_not_found),
            name="api-not-found"),
]

handler400 = "berrys_portal.errors.json_bad_request"
handler404 = "berrys_portal.errors.json_page_not_found"
handler500 = "berrys_portal.errors.json_server_error"
