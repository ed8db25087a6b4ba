"""Bench urlconf: the portal's URLs plus the ceiling (a bare DRF view reading one row by pk) and
discovery without the prepared statement."""

from django.urls import path
from rest_framework import permissions
from rest_framework.response import Response
from rest_framework.views import APIView

from berrys_portal.urls import urlpatterns as portal_urlpatterns
from registry.models import Service
from registry.serializers import ServiceSerializer
from registry.views import DiscoveryView


class CeilingView(APIView):
    """No auth, no throttle, one primary-key read, the same serializer as discovery."""

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]
    throttle_classes: list = []

    def get(self, request, pk: int):
        return Response(ServiceSerializer(Service.objects.get(pk=pk)).data)


class PlainDiscoveryView(DiscoveryView):
    """``GET /discovery/{type}`` with the pick planned on every request (not a prepared statement):
    what the PostgreSQL-only preparation saves, measured beside it."""

    prepared = False


urlpatterns = [
    path("bench/ceiling/<int:pk>", CeilingView.as_view()),
    path("bench/discovery-plain/<str:service_type>", PlainDiscoveryView.as_view()),
    *portal_urlpatterns,
]
