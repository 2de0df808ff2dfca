"""The application's database role on PostgreSQL: what it is granted, and what would let it rewrite the audit trail.

The audit tables' triggers refuse UPDATE, DELETE and TRUNCATE from anyone, but a table's owner (or a superuser, or a
role that may set `session_replication_role`) can switch them off: they bind only roles that do not own the tables.
So production runs two roles. The owner role runs `migrate` and owns every table; the application connects as a role
that owns nothing and may only read and append to the audit trail. `grant_app_role` grants it that, run as the owner
after each `migrate`; the system check gatehouse.W002 (`check --deploy`) warns when the role Gatehouse connects as
could rewrite the trail. Every statement names the role through psycopg's `sql.Identifier`, never by formatting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from psycopg import sql

from audit.integrity import RESULT_FIELDS
from audit.models import AuditCheckpoint, AuditEvent, AuditVerification

# Appended to and read, never changed: the chain and its signed checkpoints.
APPEND_ONLY = (AuditEvent._meta.db_table, AuditCheckpoint._meta.db_table)
# The runs of the chain check. Not evidence but a record of the job: each run inserts its row when it starts and
# updates it with the result when it ends (integrity.verify_and_checkpoint), so the role may UPDATE exactly the result
# columns, and no row may be deleted. A role that could update `started_at` or `full` could only delay a full walk.
VERIFICATIONS = AuditVerification._meta.db_table
VERIFICATION_RESULT_COLUMNS = tuple(
    str(field.column) for field in AuditVerification._meta.concrete_fields if field.name in RESULT_FIELDS
)
AUDIT_TABLES = (*APPEND_ONLY, VERIFICATIONS)
# The record of applied migrations is the owner's: the application reads it (pending migrations), never writes it.
READ_ONLY = ("django_migrations",)
# Functions the application calls (audit/migrations/0004); trigger functions run when they fire, without a grant.
APP_FUNCTIONS = (("audit_chain_next", "bigint, character varying, text, text"),)
# What would let a role change or remove rows of the append-only tables despite their triggers.
TAMPERING_PRIVILEGES = ("UPDATE", "DELETE", "TRUNCATE")


class GrantRefused(Exception):
    """The database is not in a state where grants would mean what they say; the message says what to do."""


@dataclass(frozen=True)
class Schema:
    """Gatehouse's tables in the audit trail's schema, with the sequences that draw their ids."""

    name: str
    tables: Sequence[str]
    sequences: Sequence[str]


# For each audit table that exists: does the role own it (or may act as its owner), and may it UPDATE, DELETE, TRUNCATE.
_AUDIT_TABLE_POWERS = """
SELECT c.relname, pg_has_role(%(role)s::name, c.relowner, 'MEMBER'),
    has_table_privilege(%(role)s::name, c.oid, 'UPDATE'),
    has_table_privilege(%(role)s::name, c.oid, 'DELETE'),
    has_table_privilege(%(role)s::name, c.oid, 'TRUNCATE')
FROM unnest(%(tables)s::text[]) WITH ORDINALITY AS t(name, n) JOIN pg_class c ON c.oid = to_regclass(t.name)
ORDER BY t.n
"""


def tamper_powers(cursor: Any, role: str | None = None) -> tuple[str, list[str]]:
    """(role, what it could do to rewrite the audit trail, in words); nothing when it can only read and append.

    `role` None: the role this connection acts as (`current_user`). Tables that do not exist yet are left out.
    """
    cursor.execute(
        "SELECT rolname, rolsuper, current_setting('server_version_num')::int FROM pg_roles "
        "WHERE rolname = coalesce(%s::name, current_user)",
        [role],
    )
    row = cursor.fetchone()
    if row is None:
        raise GrantRefused(f"There is no database role {role!r}: create it first (CREATE ROLE … LOGIN).")
    name, superuser, version = row
    if superuser:
        return name, ["it is a superuser: grants do not bind it, and it may switch the triggers off"]
    powers = []
    if version >= 150000:  # SET on a parameter can be granted since PostgreSQL 15
        cursor.execute("SELECT has_parameter_privilege(%s::name, 'session_replication_role', 'SET')", [name])
        if cursor.fetchone()[0]:
            powers.append("it may set session_replication_role, which switches the triggers off")
    cursor.execute(_AUDIT_TABLE_POWERS, {"role": name, "tables": list(AUDIT_TABLES)})
    owned, held = [], []
    for table, owner, *privileges in cursor.fetchall():
        if owner:
            owned.append(table)
        elif table in APPEND_ONLY:
            held += [f"{what} on {table}" for what, has in zip(TAMPERING_PRIVILEGES, privileges, strict=True) if has]
    if owned:
        powers.append(f"it owns (or is a member of the owner of) {', '.join(owned)}, so it may disable their triggers")
    if held:
        powers.append(f"it holds {', '.join(held)}")
    return name, powers


def schema_for_grants(cursor: Any, role: str) -> Schema:
    """The audit trail's schema and Gatehouse's tables there, once sure grants to `role` would bind it; else refused.

    Only Gatehouse's own tables (its models' and the migration record) and their sequences: anything else in the
    schema (an extension's table) is neither granted nor revoked, so the command never touches what it does not own.
    """
    cursor.execute(
        "SELECT n.nspname, n.oid, current_user FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(%s)",
        [AuditEvent._meta.db_table],
    )
    row = cursor.fetchone()
    if row is None:
        raise GrantRefused("The audit tables do not exist here: run `manage.py migrate` (as the owner role) first.")
    schema, schema_oid, current = row
    if role == current:
        raise GrantRefused(
            f"{role!r} is the role running this command: run it as the owner role (the one `migrate` ran as) and "
            "name the application's role."
        )
    name, powers = tamper_powers(cursor, role)
    if powers:
        raise GrantRefused(
            f"Grants cannot hold back {name!r}: {'; '.join(powers)}. Give the tables to the owner role "
            f"(as a superuser: REASSIGN OWNED BY {name} TO <owner>), revoke its membership of the owner role and "
            "any SET on session_replication_role, and make it NOSUPERUSER."
        )
    tables = sorted({*connection.introspection.django_table_names(include_views=False), *READ_ONLY})
    functions = [function for function, _ in APP_FUNCTIONS]
    cursor.execute(_OBJECTS, {"role": role, "schema": schema_oid, "tables": tables, "functions": functions})
    rows = cursor.fetchall()
    theirs = [relname for relname, _, _, its in rows if its]
    if theirs:
        raise GrantRefused(
            f"{role!r} owns {', '.join(theirs[:5])}{' …' if len(theirs) > 5 else ''}: an owner's grants mean nothing. "
            f"Give them to the owner role first (as a superuser: REASSIGN OWNED BY {role} TO <owner>)."
        )
    foreign = [relname for relname, _, mine, _ in rows if not mine]
    if foreign:
        raise GrantRefused(
            f"{current!r} does not own {', '.join(foreign[:5])}{' …' if len(foreign) > 5 else ''} in schema "
            f"{schema!r}: run this command as the owner role, the one `migrate` ran as."
        )
    missing = set(functions) - {relname for relname, kind, _, _ in rows if kind == "f"}
    if missing:
        raise GrantRefused(f"{', '.join(sorted(missing))} is missing: run `manage.py migrate` (as the owner role).")
    return Schema(
        schema,
        [relname for relname, kind, _, _ in rows if kind in ("r", "p")],
        [relname for relname, kind, _, _ in rows if kind == "S"],
    )


# Gatehouse's tables, the sequences they own (identity columns), and the functions it calls: whether this role owns
# each one (or acts with its owner's privileges), and whether the application's role does.
_OBJECTS = """
SELECT c.relname, c.relkind, pg_has_role(current_user, c.relowner, 'USAGE'),
    pg_has_role(%(role)s::name, c.relowner, 'MEMBER')
FROM pg_class c
WHERE c.relnamespace = %(schema)s AND c.relkind IN ('r', 'p') AND c.relname = ANY(%(tables)s::name[])
UNION ALL
SELECT s.relname, s.relkind, pg_has_role(current_user, s.relowner, 'USAGE'),
    pg_has_role(%(role)s::name, s.relowner, 'MEMBER')
FROM pg_class s
JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype IN ('a', 'i')
JOIN pg_class t ON t.oid = d.refobjid
WHERE s.relkind = 'S' AND t.relnamespace = %(schema)s AND t.relname = ANY(%(tables)s::name[])
UNION ALL
SELECT p.proname, 'f', pg_has_role(current_user, p.proowner, 'USAGE'), pg_has_role(%(role)s::name, p.proowner, 'MEMBER')
FROM pg_proc p
WHERE p.pronamespace = %(schema)s AND p.proname = ANY(%(functions)s::name[])
ORDER BY 2, 1
"""


def grant_statements(schema: Schema, role: str) -> list[sql.Composed]:
    """Per object, what the role held is revoked and what it needs granted: in one transaction, no gap shows.

    Tables: read and write, but the audit trail (read and append; a run's result columns of the verifications) and
    the migration record (read). Sequences: draw and read ids, never set them. Functions: the chain's append.
    """
    who = sql.Identifier(role)
    statements = [sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema.name), who)]
    for table in sorted(schema.tables):
        target = sql.Identifier(schema.name, table)
        statements.append(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(target, who))
        if table in APPEND_ONLY:
            statements.append(sql.SQL("GRANT SELECT, INSERT ON TABLE {} TO {}").format(target, who))
        elif table == VERIFICATIONS:
            columns = sql.SQL(", ").join([sql.Identifier(column) for column in VERIFICATION_RESULT_COLUMNS])
            statements.append(sql.SQL("GRANT SELECT, INSERT ON TABLE {} TO {}").format(target, who))
            statements.append(sql.SQL("GRANT UPDATE ({}) ON TABLE {} TO {}").format(columns, target, who))
        elif table in READ_ONLY:
            statements.append(sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(target, who))
        else:
            statements.append(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {} TO {}").format(target, who))
    for sequence in sorted(schema.sequences):
        # USAGE draws ids (audit_chain_next draws the chain's, under its lock); not UPDATE, which allows setval.
        target = sql.Identifier(schema.name, sequence)
        statements.append(sql.SQL("REVOKE ALL ON SEQUENCE {} FROM {}").format(target, who))
        statements.append(sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(target, who))
    for function, arguments in APP_FUNCTIONS:
        target = sql.Identifier(schema.name, function)
        statements.append(sql.SQL("GRANT EXECUTE ON FUNCTION {}({}) TO {}").format(target, sql.SQL(arguments), who))
    return statements
