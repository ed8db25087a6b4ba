"""Create the Operators and Viewers groups (permissions: see berrys_portal.roles)."""

from django.db import migrations

from berrys_portal.roles import SYNCED_APPS, groups_grant


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for label in SYNCED_APPS:
        # On a fresh database permissions do not exist yet: the post_migrate handler grants them.
        groups_grant(group_model=Group, permission_model=Permission, app_label=label,
                     using=schema_editor.connection.alias)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Operators", "Viewers"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("registry", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
