"""Registry, discovery and portal-health URLs (with or without a trailing slash, never a redirect)."""

from django.urls import re_path

from registry import views

urlpatterns = [
    re_path(r"^registry/services/?$", views.ServiceCollectionView.as_view(), name="service-list"),
    re_path(r"^registry/services/(?P<pk>[0-9]{1,18})/?$", views.ServiceDetailView.as_view(), name="service-detail"),
    re_path(
        r"^registry/services/(?P<pk>[0-9]{1,18})/heartbeat/?$",
        views.ServiceHeartbeatView.as_view(), name="service-heartbeat",
    ),
    re_path(
        r"^registry/services/(?P<pk>[0-9]{1,18})/maintenance/?$",
        views.ServiceMaintenanceView.as_view(), name="service-maintenance",
    ),
    re_path(r"^discovery/(?P<service_type>[^/]+)/?$", views.DiscoveryView.as_view(), name="discovery"),
    re_path(r"^health/?$", views.PortalHealthView.as_view(), name="portal-health"),
]
