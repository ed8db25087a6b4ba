"""The portal's admin site: every action needs a permission, and retention is on show.

Django runs an admin action that declares no ``permissions`` for anyone who may view the
changelist, so a Viewer could forge a POST naming such an action (third-party admins,
django_celery_beat's "disable tasks" for one, declare none). Every ModelAdmin registered
here gets ``ActionPermissionMixin``: an action without declared permissions needs the
model's "change" permission, and a POST naming an action the user may not run is a 403
instead of Django's silent "no action selected".
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied

from berrys_portal.retention import retention_for_model, retention_in_force


class ActionPermissionMixin:
    """Gates undeclared actions behind "change"; refuses forged action POSTs with 403."""

    def get_actions(self, request):
        actions = super().get_actions(request)
        if self.has_change_permission(request):
            return actions
        return {
            name: entry for name, entry in actions.items()
            if getattr(entry[0], "allowed_permissions", None)
        }

    def changelist_view(self, request, extra_context=None):
        if request.method == "POST":
            name = request.POST.get("action", "")
            if name and name not in self.get_actions(request):
                raise PermissionDenied(f"You may not run the action '{name}' here.")
        notice = retention_for_model(self.model)
        if notice:
            extra_context = {**(extra_context or {}), "retention_notice": notice}
        return super().changelist_view(request, extra_context)


class PortalAdminSite(admin.AdminSite):
    def register(self, model_or_iterable, admin_class=None, **options):
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, ActionPermissionMixin):
            admin_class = type(admin_class.__name__, (ActionPermissionMixin, admin_class), {
                "__module__": admin_class.__module__, "__doc__": admin_class.__doc__,
            })
        return super().register(model_or_iterable, admin_class, **options)

    def index(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "retention": retention_in_force()}
        return super().index(request, extra_context)
