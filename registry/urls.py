"""Registry, discovery, gateway and portal-health URLs.

Every path answers with and without a trailing slash (never a redirect: a
redirected POST loses its body). The schema lists the slash-less form only
(``schema_hide_trailing_slash_twins``).
"""

from django.urls import re_path

from berrys_portal.routing import slash_optional
from registry import consul_views, views
from registry.gateway import GatewayView

_ID = r"(?P<pk>[0-9]{1,18})"

urlpatterns = [
    *slash_optional(r"registry/services", views.ServiceCollectionView.as_view(), "service-list"),
    *slash_optional(rf"registry/services/{_ID}", views.ServiceDetailView.as_view(), "service-detail"),
    *slash_optional(rf"registry/services/{_ID}/heartbeat", views.ServiceHeartbeatView.as_view(),
                    "service-heartbeat"),
    *slash_optional(rf"registry/services/{_ID}/maintenance", views.ServiceMaintenanceView.as_view(),
                    "service-maintenance"),
    *slash_optional(r"discovery/(?P<service_type>[^/]+)", views.DiscoveryView.as_view(), "discovery"),
    *slash_optional(r"health", views.PortalHealthView.as_view(), "portal-health"),
    # Everything after the type is the service's own path, slash or not, passed on as is.
    re_path(r"^gateway/(?P<service_type>[^/]+)/(?P<path>.*)$", GatewayView.as_view(), name="gateway"),
    # The Consul-compatible read API: Consul's own paths, exactly (no slash twins).
    re_path(r"^v1/agent/self$", consul_views.agent_self_view, name="consul-agent-self"),
    re_path(r"^v1/catalog/services$", consul_views.catalog_services_view, name="consul-catalog-services"),
    re_path(r"^v1/catalog/service/(?P<name>[^/]+)$", consul_views.catalog_service_view,
            name="consul-catalog-service"),
    re_path(r"^v1/health/service/(?P<name>[^/]+)$", consul_views.health_service_view,
            name="consul-health-service"),
    re_path(r"^v1/health/state/(?P<state>[^/]+)$", consul_views.health_state_view, name="consul-health-state"),
]


def schema_hide_trailing_slash_twins(endpoints, **kwargs):
    """drf-spectacular preprocessing hook: drop ``/x/`` when ``/x`` is also routed."""
    paths = {path for path, *_ in endpoints}
    return [e for e in endpoints if not (e[0].endswith("/") and e[0].rstrip("/") in paths)]
