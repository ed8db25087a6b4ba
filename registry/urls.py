"""Registry, discovery and portal-health URLs.

Every path answers with and without a trailing slash (never a redirect: a
redirected POST loses its body). The schema lists the slash-less form only
(``schema_hide_trailing_slash_twins``).
"""

from django.urls import re_path

from registry import views


def _both(pattern: str, view, name: str) -> list:
    """The same view at ``pattern`` and ``pattern/``."""
    return [re_path(rf"^{pattern}$", view, name=name), re_path(rf"^{pattern}/$", view)]


_ID = r"(?P<pk>[0-9]{1,18})"

urlpatterns = [
    *_both(r"registry/services", views.ServiceCollectionView.as_view(), "service-list"),
    *_both(rf"registry/services/{_ID}", views.ServiceDetailView.as_view(), "service-detail"),
    *_both(rf"registry/services/{_ID}/heartbeat", views.ServiceHeartbeatView.as_view(), "service-heartbeat"),
    *_both(rf"registry/services/{_ID}/maintenance", views.ServiceMaintenanceView.as_view(),
           "service-maintenance"),
    *_both(r"discovery/(?P<service_type>[^/]+)", views.DiscoveryView.as_view(), "discovery"),
    *_both(r"health", views.PortalHealthView.as_view(), "portal-health"),
]


def schema_hide_trailing_slash_twins(endpoints, **kwargs):
    """drf-spectacular preprocessing hook: drop ``/x/`` when ``/x`` is also routed."""
    paths = {path for path, *_ in endpoints}
    return [e for e in endpoints if not (e[0].endswith("/") and e[0].rstrip("/") in paths)]
