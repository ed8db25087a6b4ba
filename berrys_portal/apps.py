"""The admin app with the portal's own site (berrys_portal.admin_site.PortalAdminSite)."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    default_site = "berrys_portal.admin_site.PortalAdminSite"
