"""On PostgreSQL, one function that appends to the chain's bookkeeping in the same round trip as the insert.

`audit_record` appends an event with a single statement that calls `audit_chain_next` and inserts the row. The
function, in this order: takes the transaction-scoped advisory lock that serialises appends; reads the chain's
head; draws the new row's id; hashes the event's canonical content around the head. It is VOLATILE PL/pgSQL, so
its SELECT runs with a fresh snapshot taken after the lock was granted (READ COMMITTED): it sees the head committed
by whoever held the lock before, and the id is drawn under the lock, so id order stays chain order. The lock is
held until the surrounding transaction (the caller's, or the statement's own in autocommit) ends, after the new row
is visible.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION audit_chain_next(
    lock_key bigint, genesis varchar, prefix text, suffix text,
    OUT out_id bigint, OUT out_prev varchar, OUT out_hash varchar
) VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT e.hash INTO out_prev FROM audit_auditevent AS e ORDER BY e.id DESC LIMIT 1;
    out_prev := coalesce(out_prev, genesis);
    out_id := nextval(pg_get_serial_sequence('audit_auditevent', 'id'));
    out_hash := encode(sha256(convert_to(prefix || out_prev || suffix, 'UTF8')), 'hex');
END;
$$;
"""

DROP = "DROP FUNCTION IF EXISTS audit_chain_next(bigint, varchar, text, text);"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_append_only_trigger")]

    operations = [migrations.RunPython(forwards, backwards)]
