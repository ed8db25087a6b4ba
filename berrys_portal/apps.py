"""The admin app with the portal's own site (berrys_portal.admin_site.PortalAdminSite).

It is also the kernel's app config: it connects the one role sync (``berrys_portal.roles``).
"""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    default_site = "berrys_portal.admin_site.PortalAdminSite"

    def ready(self) -> None:
        super().ready()
        from django.db.models.signals import post_migrate

        from berrys_portal.roles import roles_sync

        # After every app's migrations (its permissions exist by then).
        post_migrate.connect(roles_sync, dispatch_uid="berrys_portal.roles_sync")
