"""Operator roles: the two groups, the two operate permissions, and their one sync.

Two groups: **Operators** retry, rerun and cancel runs, answer human steps and
reset breakers; **Viewers** see everything and can do none of it. The rights are
two Django permissions (``dashboard.operate_run``, ``dashboard.operate_service``),
so superusers have them and anyone can be granted them one by one. The permission
rows hang on the dashboard's table-less ``Operations`` model (their codenames and
content type are what existing databases hold); this module names them by string
only, so the kernel imports no app.

Every place that changes something checks them:

* admin actions declare ``@admin.action(permissions=["operate_run"])`` (or
  ``operate_service``) on a ModelAdmin that mixes in ``OperateAdminMixin``;
  the action is then absent for viewers, and a forged POST naming it is a 403
  (the mixin turns Django's silent "no action selected" into PermissionDenied);
* custom admin views are wrapped in ``operate_required(OPERATE_RUN)``;
* templates hide buttons with ``{% if perms.dashboard.operate_run %}``.

Group permissions (kept in sync by ``roles_sync``, the one ``post_migrate`` receiver,
connected by ``berrys_portal.apps``):

* ``Operators``: every permission of the registry, workflows and django_celery_beat
  apps, django-axes' (to release a login lock-out) and the two operate permissions.
* ``Viewers``: the view_* permissions of the same three apps; never an operate one.

It runs after each app's migrations (auth has created that app's permissions by then),
so a model added by a later migration is covered without another data migration. It
only adds (permissions an administrator granted by hand are kept), except that a
Viewer never holds an operate permission.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.core.exceptions import PermissionDenied
from django.db import DEFAULT_DB_ALIAS

OPERATE_RUN = "dashboard.operate_run"
OPERATE_SERVICE = "dashboard.operate_service"
OPERATE_APP = "dashboard"
OPERATE_CODENAMES = ("operate_run", "operate_service")

OPERATORS = "Operators"
VIEWERS = "Viewers"

# Apps whose models Operators may change and both groups may view in the admin.
SYNCED_APPS = ("registry", "workflows", "django_celery_beat")
VIEWABLE_APPS = SYNCED_APPS
# Operators release admin-login lock-outs (delete an axes access attempt); Viewers do not
# even see them (they name users and their addresses).
OPERATOR_ONLY_APPS = ("axes",)


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


def groups_grant(*, group_model, permission_model, app_label: str, using: str = DEFAULT_DB_ALIAS) -> None:
    """Give Operators every permission of ``app_label`` and Viewers its view_* ones (idempotent).

    Takes the models as arguments so the registry's data migration can pass its historical ones.
    """
    operators, _ = group_model.objects.using(using).get_or_create(name=OPERATORS)
    viewers, _ = group_model.objects.using(using).get_or_create(name=VIEWERS)
    perms = list(permission_model.objects.using(using).filter(content_type__app_label=app_label))
    operators.permissions.add(*perms)
    viewers.permissions.add(*[p for p in perms if p.codename.startswith("view_")])


def roles_sync(sender=None, app_config=None, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    """The ``post_migrate`` receiver: grant the permissions of the app just migrated."""
    if app_config is None:
        return
    label = app_config.label
    if label not in (*SYNCED_APPS, *OPERATOR_ONLY_APPS, OPERATE_APP):
        return
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.management import create_contenttypes

    # This receiver is connected by the first app in INSTALLED_APPS, so it runs before auth's
    # own receivers for the same app: create the app's permissions first (both idempotent).
    create_contenttypes(app_config, verbosity=0, using=using)
    create_permissions(app_config, verbosity=0, using=using)
    if label in SYNCED_APPS:
        groups_grant(group_model=Group, permission_model=Permission, app_label=label, using=using)
        return
    operators, _ = Group.objects.using(using).get_or_create(name=OPERATORS)
    if label in OPERATOR_ONLY_APPS:
        operators.permissions.add(*Permission.objects.using(using).filter(content_type__app_label=label))
        return
    operate = list(Permission.objects.using(using).filter(
        content_type__app_label=OPERATE_APP, codename__in=OPERATE_CODENAMES))
    viewers, _ = Group.objects.using(using).get_or_create(name=VIEWERS)
    operators.permissions.add(*operate)
    # A viewer never operates, even if someone added the permission to the group.
    viewers.permissions.remove(*operate)
