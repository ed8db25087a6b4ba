"""The health sweep's due index in the claim's order: never checked first, then by due
time, then id (registry.health_loop._claim), so a claim reads its batch off the index
instead of scanning and sorting every due row.

PostgreSQL sorts NULLs last in an ascending index, so it is spelled NULLS FIRST there;
SQLite sorts them first already and refuses NULLS FIRST in CREATE INDEX, so the same
order is a plain ascending index there.
"""

from django.db import migrations, models

PG_CREATE = (
    'CREATE INDEX "registry_service_due" ON "registry_service" '
    '("next_check_at" ASC NULLS FIRST, "id") WHERE "ttl_seconds" IS NULL'
)
SQLITE_CREATE = (
    'CREATE INDEX "registry_service_due" ON "registry_service" '
    '("next_check_at" ASC, "id") WHERE "ttl_seconds" IS NULL'
)
OLD_CREATE = 'CREATE INDEX "registry_service_due" ON "registry_service" ("next_check_at") WHERE "ttl_seconds" IS NULL'


def _run(pg: str, sqlite: str):
    def run(apps, schema_editor):
        schema_editor.execute('DROP INDEX IF EXISTS "registry_service_due"')
        schema_editor.execute(pg if schema_editor.connection.vendor == "postgresql" else sqlite)
    return run


class Migration(migrations.Migration):

    dependencies = [
        ("registry", "0012_keep_trigger_on_index_columns"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveIndex(model_name="service", name="registry_service_due"),
                migrations.AddIndex(
                    model_name="service",
                    index=models.Index(
                        models.OrderBy(models.F("next_check_at"), nulls_first=True), models.F("id"),
                        condition=models.Q(("ttl_seconds__isnull", True)), name="registry_service_due",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunPython(_run(PG_CREATE, SQLITE_CREATE), _run(OLD_CREATE, OLD_CREATE)),
            ],
        ),
    ]
