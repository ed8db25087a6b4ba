"""The registry index moves once per transaction, not once per changed row (PostgreSQL).

Migration 0008's deferred ``registry_service_index_bump`` ran for every changed row at
commit, and every run updated the same one-row counter, upserted its type's row and sent
a ``pg_notify``. Within one transaction each update of the same counter row adds a row
version the next update must walk past, so a commit of N changed rows cost O(N²): the
health sweep's groups of 1,000 first verdicts took 1.2–1.7 s to commit (6 ms for 1,000
updates that change no watched column), and ``bench/registry.py``'s seed of 90,000 rows
709 s (branch ``sweep``'s and ``regwrite``'s profiles, 2026-12-01).

Now the first run in a transaction bumps the counter and remembers the value in a
transaction-local setting (``set_config(…, true)``: gone at commit or rollback, rolled
back with a savepoint); the later runs of the same transaction reuse it, upsert a type's
row only while it is below that value, and do not notify again. Every row a transaction
changes gets that transaction's index, as entries written by one Raft log entry share one
index in Consul. What readers see is unchanged: the index still moves at commit, in commit
order (the counter row is locked by the first run, at commit, until the end), and only when
a watched column changes; ``pg_notify`` wakes the watchers once per commit.
SQLite (one writer at a time, no row versions to walk) keeps its plain triggers.
"""

import importlib

from django.db import migrations

_BUMP_ONCE = """
CREATE OR REPLACE FUNCTION registry_service_index_bump() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE v bigint;
BEGIN
  v := NULLIF(current_setting('registry.index_txn', true), '')::bigint;
  IF v IS NULL THEN
    -- An upsert: the row may be gone (a flushed test database, a partial restore); then it
    -- restarts above every type's index, so no index ever moves backwards.
    INSERT INTO registry_registryindex (id, value)
      VALUES (1, (SELECT COALESCE(MAX(value), 1) FROM registry_typeindex) + 1)
      ON CONFLICT (id) DO UPDATE SET value = registry_registryindex.value + 1 RETURNING value INTO v;
    PERFORM set_config('registry.index_txn', v::text, true);
    PERFORM pg_notify('registry_index', v::text);
  END IF;
  IF TG_OP = 'DELETE' THEN
    INSERT INTO registry_typeindex AS t (type, value) VALUES (OLD.type, v)
      ON CONFLICT (type) DO UPDATE SET value = EXCLUDED.value WHERE t.value < EXCLUDED.value;
  ELSE
    UPDATE registry_service SET modify_index = v,
      create_index = CASE WHEN TG_OP = 'INSERT' THEN v ELSE create_index END
      WHERE id = NEW.id;
    INSERT INTO registry_typeindex AS t (type, value) VALUES (NEW.type, v)
      ON CONFLICT (type) DO UPDATE SET value = EXCLUDED.value WHERE t.value < EXCLUDED.value;
    IF TG_OP = 'UPDATE' AND OLD.type IS DISTINCT FROM NEW.type THEN
      INSERT INTO registry_typeindex AS t (type, value) VALUES (OLD.type, v)
        ON CONFLICT (type) DO UPDATE SET value = EXCLUDED.value WHERE t.value < EXCLUDED.value;
    END IF;
  END IF;
  RETURN NULL;
END $$;
"""

# Reversing restores migration 0008's function, from 0008 itself (one text, not a copy).
_BUMP_PER_ROW = importlib.import_module("registry.migrations.0008_ecosystem_registry_index").PG_FORWARD[0]


def _replace(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)
    return run


class Migration(migrations.Migration):

    dependencies = [("registry", "0013_health_due_index")]

    operations = [migrations.RunPython(_replace(_BUMP_ONCE), _replace(_BUMP_PER_ROW))]
