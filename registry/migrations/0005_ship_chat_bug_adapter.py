"""Ship the adapter rule that fixes the integration guide's chat bug.

The Web Dashboard's chat sends ``status: "PLANNING"`` in ``POST /projects``;
the Project Coordinator's ProjectCreateRequest has no such field and answers
500. Dropping the field on the way makes project creation via chat work.
"""

from django.db import migrations

RULE = {
    "service_type": "PROJECT_COORDINATOR",
    "method": "POST",
    "endpoint_pattern": "/projects",
    "pattern_type": "glob",
    "action": "drop",
    "field": "status",
}


def ship(apps, schema_editor):
    Rule = apps.get_model("registry", "RequestAdapterRule")
    Rule.objects.get_or_create(
        **RULE,
        defaults={
            "order": 10,
            "enabled": True,
            "description": "Chat bug: the Web Dashboard sends status, which ProjectCreateRequest "
            "rejects with a 500. The Project Coordinator sets the initial status itself.",
        },
    )


def unship(apps, schema_editor):
    apps.get_model("registry", "RequestAdapterRule").objects.filter(**RULE).delete()


class Migration(migrations.Migration):
    dependencies = [("registry", "0004_request_adapter_rules")]

    operations = [migrations.RunPython(ship, unship)]
