"""The database triggers that move the policy generation (governance.models.PolicyGeneration) whenever a watched
table changes, whoever changes it: a service, the admin, a bulk update, a raw statement or a migration.

An app's migration calls `watch(...)` for its own tables. PostgreSQL fires one statement-level trigger per
statement (TRUNCATE included); SQLite has row-level triggers only. Each sets a new random value in the changing
transaction, so the new value becomes visible exactly when the change does, and a rolled-back change takes its value
with it. Columns that change often and say nothing about policy (a token's last use, a person's last login) are left
out: an update that changes only those does not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import migrations

GENERATION_TABLE = "governance_policygeneration"
_PG_FUNCTION = "gatehouse_policy_bump"


@dataclass(frozen=True)
class Watched:
    table: str
    ignore: Sequence[str] = ()  # an update that changes only these columns does not count


def _pg_function_sql() -> str:
    # Only constants of this module go into the text.
    return f"""
CREATE OR REPLACE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {GENERATION_TABLE} (id, value) VALUES (1, md5(random()::text || clock_timestamp()::text))
    ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value;
    RETURN NULL;
END $$;
"""  # noqa: S608


def _name(table: str, suffix: str = "") -> str:
    return f"gatehouse_policy_{table}{suffix}"[:63]


def _pg_sql(watched: Watched) -> tuple[str, str]:
    name, table, function = _name(watched.table), watched.table, f"EXECUTE FUNCTION {_PG_FUNCTION}()"
    drop = f"DROP TRIGGER IF EXISTS {name} ON {table}; DROP TRIGGER IF EXISTS {_name(table, '_u')} ON {table};"
    if not watched.ignore:
        every = "INSERT OR UPDATE OR DELETE OR TRUNCATE"
        return f"{drop} CREATE TRIGGER {name} AFTER {every} ON {table} FOR EACH STATEMENT {function};", drop
    # Row by row for updates, so the row's other columns can be compared (what a table gains later counts too).
    ignored = "ARRAY[" + ", ".join(f"'{column}'" for column in watched.ignore) + "]::text[]"
    create = (
        f"{drop} CREATE TRIGGER {name} AFTER INSERT OR DELETE OR TRUNCATE ON {table} FOR EACH STATEMENT {function}; "
        f"CREATE TRIGGER {_name(table, '_u')} AFTER UPDATE ON {table} FOR EACH ROW "
        f"WHEN ((to_jsonb(OLD) - {ignored}) IS DISTINCT FROM (to_jsonb(NEW) - {ignored})) {function};"
    )
    return create, drop


# Only constants of this module go into the text.
_SQLITE_BUMP = f"INSERT INTO {GENERATION_TABLE} (id, value) VALUES (1, lower(hex(randomblob(16)))) " + (  # noqa: S608
    "ON CONFLICT(id) DO UPDATE SET value = excluded.value;"
)


def _sqlite_sql(watched: Watched, columns: Sequence[str]) -> tuple[list[str], list[str]]:
    counted = [column for column in columns if column not in watched.ignore]
    update = f"UPDATE OF {', '.join(counted)}" if watched.ignore else "UPDATE"
    creates, drops = [], []
    for suffix, event in (("_i", "INSERT"), ("_u", update), ("_d", "DELETE")):
        name = _name(watched.table, suffix)
        drops.append(f"DROP TRIGGER IF EXISTS {name};")
        creates.append(
            f"DROP TRIGGER IF EXISTS {name}; "
            f"CREATE TRIGGER {name} AFTER {event} ON {watched.table} FOR EACH ROW BEGIN {_SQLITE_BUMP} END;"
        )
    return creates, drops


def watch(*tables: Watched) -> migrations.RunPython:
    """A migration operation that installs (and, reversed, removes) the triggers on `tables`."""

    def forwards(apps, schema_editor) -> None:
        statements: list[str] = []
        if schema_editor.connection.vendor == "postgresql":
            statements.append(_pg_function_sql())
            statements.extend(_pg_sql(watched)[0] for watched in tables)
        else:
            for watched in tables:
                statements.extend(_sqlite_sql(watched, _sqlite_columns(schema_editor, watched.table))[0])
        for statement in statements:
            if schema_editor.connection.vendor == "postgresql":
                schema_editor.execute(statement)
            else:  # sqlite3 runs one statement per call
                for part in _split_sqlite(statement):
                    schema_editor.execute(part)

    def backwards(apps, schema_editor) -> None:
        for watched in tables:
            if schema_editor.connection.vendor == "postgresql":
                schema_editor.execute(_pg_sql(watched)[1])
            else:
                for statement in _sqlite_sql(watched, [])[1]:
                    schema_editor.execute(statement)

    return migrations.RunPython(forwards, backwards, elidable=False)


def _sqlite_columns(schema_editor, table: str) -> list[str]:
    with schema_editor.connection.cursor() as cursor:
        return [column.name for column in schema_editor.connection.introspection.get_table_description(cursor, table)]


def _split_sqlite(statement: str) -> list[str]:
    """ "DROP ...; CREATE TRIGGER ... BEGIN ...; END;" as its two statements (the trigger body keeps its semicolon)."""
    drop, _, create = statement.partition("; ")
    return [drop + ";", create] if create else [statement]
