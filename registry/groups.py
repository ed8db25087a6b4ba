"""The two operator roles, kept in sync with the models as apps add them.

* ``Operators``: add / change / delete / view on every model of the registry,
  workflows and django_celery_beat apps (admin actions need "change").
* ``Viewers``: view only on the same models.
* Operators also get django-axes' permissions (to release a login lock-out); Viewers none.

A data migration creates the groups; this ``post_migrate`` handler grants the
permissions of each of those apps after its own migrations, so a model added
by a later migration is covered without another data migration.
"""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS

OPERATORS = "Operators"
VIEWERS = "Viewers"
SYNCED_APPS = ("registry", "workflows", "django_celery_beat")
# Operators release admin-login lock-outs (delete an axes access attempt); Viewers do not
# even see them (they name users and their addresses).
OPERATOR_ONLY_APPS = ("axes",)


def groups_grant(*, group_model, permission_model, app_label: str, using: str = DEFAULT_DB_ALIAS) -> None:
    """Give Operators every permission of ``app_label`` and Viewers its view_* ones (idempotent)."""
    operators, _ = group_model.objects.using(using).get_or_create(name=OPERATORS)
    viewers, _ = group_model.objects.using(using).get_or_create(name=VIEWERS)
    perms = list(permission_model.objects.using(using).filter(content_type__app_label=app_label))
    operators.permissions.add(*perms)
    viewers.permissions.add(*[p for p in perms if p.codename.startswith("view_")])


def groups_sync(sender, app_config=None, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    """``post_migrate`` receiver (runs after auth has created the app's permissions)."""
    if app_config is None or app_config.label not in (*SYNCED_APPS, *OPERATOR_ONLY_APPS):
        return
    from django.contrib.auth.models import Group, Permission

    if app_config.label in OPERATOR_ONLY_APPS:
        operators, _ = Group.objects.using(using).get_or_create(name=OPERATORS)
        operators.permissions.add(*Permission.objects.using(using).filter(
            content_type__app_label=app_config.label))
        return

    groups_grant(group_model=Group, permission_model=Permission, app_label=app_config.label, using=using)
