"""On PostgreSQL, refuse TRUNCATE of audit events too: 0003's row trigger never fires for TRUNCATE.

A statement-level BEFORE TRUNCATE trigger reusing 0003's function. Like every ordinary trigger it is skipped under
`session_replication_role = replica`, which only a superuser (or a role granted SET on it) can set: the application's
role cannot, and the test harness's flush between transactional tests uses exactly that (tests/conftest.py).
"""

from django.db import migrations

CREATE = """
CREATE TRIGGER audit_event_no_truncate
    BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only();
"""

DROP = "DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_auditevent;"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("audit", "0007_mcp_tools_imported_verb")]

    operations = [migrations.RunPython(forwards, backwards)]
