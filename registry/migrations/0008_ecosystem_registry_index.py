"""The registry index (Consul's X-Consul-Index) kept by database triggers.

Triggers, not application code, because services change through several paths
(ORM saves, the health sweep's one-statement bulk UPDATE, deletes, the admin):
a trigger sees them all. On PostgreSQL the triggers are deferred constraint
triggers: they run at commit, after every row lock the transaction takes, so the
one-row counter is locked last and briefly (no lock-order deadlock with the
sweep), index order is commit order, and ``pg_notify`` wakes the watchers
(``registry.watch``). SQLite runs one writer at a time, so plain triggers suffice.
"""

from django.db import migrations, models

# Columns whose change a reader of the API sees. Not: timestamps, probe counters,
# latency, status_reason (a slow service's reason changes on every probe; Consul also
# rate-limits output-only updates), breaker overrides, owner.
WATCHED = [
    "name", "type", "url", "health_url", "metadata", "capabilities", "endpoints", "tags",
    "criticality", "status", "pending_approval", "check_interval_seconds",
    "check_timeout_seconds", "slow_threshold_ms", "failures_before_critical",
    "successes_before_passing", "ttl_seconds", "deregister_after_seconds",
]

_PG_CHANGED = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in WATCHED)

PG_FORWARD = [
    """
CREATE OR REPLACE FUNCTION registry_service_index_bump() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE v bigint;
BEGIN
  -- An upsert: the row may be gone (a flushed test database, a partial restore); then it
  -- restarts above every type's index, so no index ever moves backwards.
  INSERT INTO registry_registryindex (id, value)
    VALUES (1, (SELECT COALESCE(MAX(value), 1) FROM registry_typeindex) + 1)
    ON CONFLICT (id) DO UPDATE SET value = registry_registryindex.value + 1 RETURNING value INTO v;
  IF TG_OP = 'DELETE' THEN
    INSERT INTO registry_typeindex (type, value) VALUES (OLD.type, v)
      ON CONFLICT (type) DO UPDATE SET value = EXCLUDED.value;
  ELSE
    UPDATE registry_service SET modify_index = v,
      create_index = CASE WHEN TG_OP = 'INSERT' THEN v ELSE create_index END
      WHERE id = NEW.id;
    INSERT INTO registry_typeindex (type, value) VALUES (NEW.type, v)
      ON CONFLICT (type) DO UPDATE SET value = EXCLUDED.value;
    IF TG_OP = 'UPDATE' AND OLD.type IS DISTINCT FROM NEW.type THEN
      INSERT INTO registry_typeindex (type, value) VALUES (OLD.type, v)
        ON CONFLICT (type) DO UPDATE SET value = EXCLUDED.value;
    END IF;
  END IF;
  PERFORM pg_notify('registry_index', v::text);
  RETURN NULL;
END $$;
""",
    # A full-row ORM save writes the Python object's (possibly stale) indexes: never move back.
    """
CREATE OR REPLACE FUNCTION registry_service_index_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.modify_index := GREATEST(NEW.modify_index, OLD.modify_index);
  NEW.create_index := GREATEST(NEW.create_index, OLD.create_index);
  RETURN NEW;
END $$;
""",
    """CREATE TRIGGER registry_service_index_keep BEFORE UPDATE ON registry_service
       FOR EACH ROW EXECUTE FUNCTION registry_service_index_keep();""",
    """CREATE CONSTRAINT TRIGGER registry_service_index_ins AFTER INSERT ON registry_service
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION registry_service_index_bump();""",
    f"""CREATE CONSTRAINT TRIGGER registry_service_index_upd AFTER UPDATE ON registry_service
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ({_PG_CHANGED})
       EXECUTE FUNCTION registry_service_index_bump();""",
    """CREATE CONSTRAINT TRIGGER registry_service_index_del AFTER DELETE ON registry_service
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION registry_service_index_bump();""",
]
PG_BACKWARD = [
    "DROP TRIGGER IF EXISTS registry_service_index_keep ON registry_service;",
    "DROP FUNCTION IF EXISTS registry_service_index_keep();",
    "DROP TRIGGER IF EXISTS registry_service_index_ins ON registry_service;",
    "DROP TRIGGER IF EXISTS registry_service_index_upd ON registry_service;",
    "DROP TRIGGER IF EXISTS registry_service_index_del ON registry_service;",
    "DROP FUNCTION IF EXISTS registry_service_index_bump();",
]

_SQ_BUMP = ("INSERT INTO registry_registryindex (id, value) "
            "VALUES (1, (SELECT COALESCE(MAX(value), 1) FROM registry_typeindex) + 1) "
            "ON CONFLICT(id) DO UPDATE SET value = value + 1;")
_SQ_V = "(SELECT value FROM registry_registryindex WHERE id = 1)"


def _sq_type(col: str) -> str:
    return (f"INSERT INTO registry_typeindex (type, value) VALUES ({col}, {_SQ_V}) "
            "ON CONFLICT(type) DO UPDATE SET value = excluded.value;")


_SQ_CHANGED = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in WATCHED)

SQLITE_FORWARD = [
    """CREATE TRIGGER registry_service_index_keep AFTER UPDATE OF modify_index, create_index ON registry_service
WHEN NEW.modify_index < OLD.modify_index OR NEW.create_index < OLD.create_index BEGIN
  UPDATE registry_service SET modify_index = MAX(modify_index, OLD.modify_index),
    create_index = MAX(create_index, OLD.create_index) WHERE id = NEW.id;
END;""",
    f"""CREATE TRIGGER registry_service_index_ins AFTER INSERT ON registry_service BEGIN
  {_SQ_BUMP}
  UPDATE registry_service SET modify_index = {_SQ_V}, create_index = {_SQ_V} WHERE id = NEW.id;
  {_sq_type("NEW.type")}
END;""",
    f"""CREATE TRIGGER registry_service_index_upd AFTER UPDATE OF {", ".join(WATCHED)} ON registry_service
WHEN {_SQ_CHANGED} BEGIN
  {_SQ_BUMP}
  UPDATE registry_service SET modify_index = {_SQ_V} WHERE id = NEW.id;
  {_sq_type("NEW.type")}
  {_sq_type("OLD.type")}
END;""",
    f"""CREATE TRIGGER registry_service_index_del AFTER DELETE ON registry_service BEGIN
  {_SQ_BUMP}
  {_sq_type("OLD.type")}
END;""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS registry_service_index_keep;",
    "DROP TRIGGER IF EXISTS registry_service_index_ins;",
    "DROP TRIGGER IF EXISTS registry_service_index_upd;",
    "DROP TRIGGER IF EXISTS registry_service_index_del;",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        statements = statements_by_vendor.get(schema_editor.connection.vendor)
        if statements is None:
            raise RuntimeError(f"registry index triggers: unsupported database {schema_editor.connection.vendor}")
        for sql in statements:
            schema_editor.execute(sql)
    return run


def _seed(apps, schema_editor):
    RegistryIndex = apps.get_model("registry", "RegistryIndex")
    RegistryIndex.objects.get_or_create(id=1, defaults={"value": 1})


class Migration(migrations.Migration):

    dependencies = [("registry", "0007_merge_wave2")]

    operations = [
        migrations.AddField(
            model_name="service", name="create_index",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name="service", name="modify_index",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.CreateModel(
            name="RegistryIndex",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("value", models.BigIntegerField(default=1)),
            ],
            options={"verbose_name": "registry index"},
        ),
        migrations.CreateModel(
            name="TypeIndex",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("type", models.CharField(max_length=64, unique=True)),
                ("value", models.BigIntegerField()),
            ],
            options={"verbose_name": "type index"},
        ),
        migrations.RunPython(_seed, migrations.RunPython.noop),
        migrations.RunPython(_run({"postgresql": PG_FORWARD, "sqlite": SQLITE_FORWARD}),
                             _run({"postgresql": PG_BACKWARD, "sqlite": SQLITE_BACKWARD})),
    ]
