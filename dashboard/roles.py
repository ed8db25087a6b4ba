"""Operator roles, enforced on the server.

Two groups: **Operators** retry, rerun and cancel runs, answer human steps and
reset breakers; **Viewers** see everything and can do none of it. The rights are
two Django permissions (``dashboard.operate_run``, ``dashboard.operate_service``),
so superusers have them and anyone can be granted them one by one.

Every place that changes something checks them:

* admin actions declare ``@admin.action(permissions=["operate_run"])`` (or
  ``operate_service``) on a ModelAdmin that mixes in ``OperateAdminMixin``;
  the action is then absent for viewers, and a forged POST naming it is a 403
  (the mixin turns Django's silent "no action selected" into PermissionDenied);
* custom admin views are wrapped in ``operate_required(OPERATE_RUN)``;
* templates hide buttons with ``{% if perms.dashboard.operate_run %}``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.core.exceptions import PermissionDenied

OPERATE_RUN = "dashboard.operate_run"
OPERATE_SERVICE = "dashboard.operate_service"

OPERATORS = "Operators"
VIEWERS = "Viewers"

# Apps whose models both groups may view in the admin.
VIEWABLE_APPS = ("registry", "workflows", "django_celery_beat")


def can_operate_runs(user) -> bool:
    return bool(user and user.is_active and user.has_perm(OPERATE_RUN))


def can_operate_services(user) -> bool:
    return bool(user and user.is_active and user.has_perm(OPERATE_SERVICE))


def operate_required(perm: str) -> Callable:
    """Decorator for admin views: 403 unless the user holds ``perm``."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not (request.user.is_active and request.user.has_perm(perm)):
                raise PermissionDenied(f"Operators only: this needs the {perm} permission.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


class OperateAdminMixin:
    """For ModelAdmins with operator actions.

    Provides ``has_operate_run_permission`` / ``has_operate_service_permission``
    (what ``@admin.action(permissions=[...])`` consults) and refuses with 403 a
    POST naming an action the user may not run, instead of ignoring it.
    """

    def has_operate_run_permission(self, request) -> bool:
        return can_operate_runs(request.user)

    def has_operate_service_permission(self, request) -> bool:
        return can_operate_services(request.user)

    def changelist_view(self, request, extra_context=None):
        if request.method == "POST" and "action" in request.POST:
            name = request.POST.get("action", "")
            allowed = self.get_actions(request)
            if name and name not in allowed and self._action_exists(name):
                raise PermissionDenied(f"Operators only: you may not run '{name}'.")
        return super().changelist_view(request, extra_context)

    def _action_exists(self, name: str) -> bool:
        from django.contrib import admin

        if hasattr(self, name) or name in dict(admin.site.actions):
            return True
        return any(getattr(a, "__name__", None) == name for a in (self.actions or ()))


def groups_sync(sender=None, **kwargs) -> None:
    """Create the two groups if missing and give them their permissions (idempotent).

    Adds only: permissions an administrator granted by hand are kept. Also run by
    the registry app's own group sync, if any; both are get-or-create.
    """
    app_config = kwargs.get("app_config")
    if app_config is not None and app_config.label != "dashboard":
        return  # once per migrate, after the dashboard app (listed last) has its permissions
    from django.contrib.auth.models import Group, Permission

    operate = Permission.objects.filter(
        content_type__app_label="dashboard", codename__in=["operate_run", "operate_service"]
    )
    view = Permission.objects.filter(
        content_type__app_label__in=VIEWABLE_APPS, codename__startswith="view_"
    )
    if not operate.exists():  # dashboard's permissions are not created yet in this migrate
        return
    operators, _ = Group.objects.get_or_create(name=OPERATORS)
    viewers, _ = Group.objects.get_or_create(name=VIEWERS)
    operators.permissions.add(*operate, *view)
    viewers.permissions.add(*view)
    # A viewer never operates, even if someone added the permission to the group.
    viewers.permissions.remove(*operate)
