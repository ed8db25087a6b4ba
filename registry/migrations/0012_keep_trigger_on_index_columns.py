"""The index-keeping trigger fires only when an UPDATE sets the index columns (PostgreSQL).

Migration 0008's ``registry_service_index_keep`` ran ``BEFORE UPDATE`` of every row: a
PL/pgSQL call on each heartbeat, each health-sweep result and each status write, though
only a full-row ORM save (which writes the Python object's possibly stale
``modify_index`` / ``create_index``) can move an index back. ``BEFORE UPDATE OF
modify_index, create_index`` fires exactly for those (a column in the SET list counts even
when its value is unchanged), and never for ``UPDATE … SET last_heartbeat_at``. SQLite's
version of the trigger was already ``AFTER UPDATE OF modify_index, create_index``.
"""

from django.db import migrations

_PG_ANY_UPDATE = """CREATE TRIGGER registry_service_index_keep BEFORE UPDATE ON registry_service
   FOR EACH ROW EXECUTE FUNCTION registry_service_index_keep();"""
_PG_INDEX_COLUMNS = """CREATE TRIGGER registry_service_index_keep BEFORE UPDATE OF modify_index, create_index
   ON registry_service FOR EACH ROW EXECUTE FUNCTION registry_service_index_keep();"""
_DROP = "DROP TRIGGER IF EXISTS registry_service_index_keep ON registry_service;"


def _replace(create: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(_DROP)
            schema_editor.execute(create)
    return run


class Migration(migrations.Migration):

    dependencies = [("registry", "0011_outbox")]

    operations = [migrations.RunPython(_replace(_PG_INDEX_COLUMNS), _replace(_PG_ANY_UPDATE))]
