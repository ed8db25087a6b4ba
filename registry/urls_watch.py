"""The watch server's routes (``berrys_portal/urls_watch.py`` includes them): the blocking endpoints only.

Route ``/v1/`` and watches (``?index=``) of ``/registry/services`` and
``/discovery/{type}`` here; everything else stays on the regular server.
"""

from django.urls import re_path

from registry import consul_views, views, watch_views

urlpatterns = [
    re_path(r"^v1/agent/self$", consul_views.agent_self_view),
    re_path(r"^v1/catalog/services$", consul_views.catalog_services_view),
    re_path(r"^v1/catalog/service/(?P<name>[^/]+)$", consul_views.catalog_service_view),
    re_path(r"^v1/health/service/(?P<name>[^/]+)$", consul_views.health_service_view),
    re_path(r"^v1/health/state/(?P<state>[^/]+)$", consul_views.health_state_view),
    re_path(r"^registry/services/?$", watch_views.service_list_watch),
    re_path(r"^discovery/(?P<service_type>[^/]+)/?$", watch_views.discovery_watch),
    re_path(r"^health/?$", views.PortalHealthView.as_view()),
]
