"""Grant the application's database role what Gatehouse needs, and on the audit trail no more than read and append.

Run as the owner role, after each `migrate` (new tables are granted nothing until it runs again):

    DATABASE_URL=postgresql://gatehouse_owner@db/gatehouse manage.py migrate
    DATABASE_URL=postgresql://gatehouse_owner@db/gatehouse manage.py grant_app_role gatehouse_app

The application then connects as `gatehouse_app`. See audit/grants.py for what is granted and why.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from audit.grants import GrantRefused, grant_statements, schema_for_grants


class Command(BaseCommand):
    help = (
        "PostgreSQL: grant ROLE (the application's login role) read and write on Gatehouse's tables but only read "
        "and append on the audit trail, revoking whatever else it held there. Run as the owner role after migrate. "
        "Refuses a role that owns tables, is a superuser or could switch the audit triggers off."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("role", help="The role the application connects as (it must exist and own nothing).")
        parser.add_argument(
            "--print",
            action="store_true",
            dest="print_only",
            help="Print the SQL (one transaction, for psql) instead of running it.",
        )

    def handle(self, *args, role: str, print_only: bool, **options) -> None:
        if connection.vendor != "postgresql":
            raise CommandError(
                f"grant_app_role is for PostgreSQL (this database is {connection.vendor}): SQLite has no roles, and "
                "the embedded setup is for development."
            )
        with transaction.atomic(), connection.cursor() as cursor:
            try:
                schema = schema_for_grants(cursor, role)
            except GrantRefused as exc:
                raise CommandError(str(exc)) from exc
            raw = cursor.cursor.connection  # psycopg's own: it quotes the identifiers
            statements = [statement.as_string(raw) for statement in grant_statements(schema, role)]
            if print_only:
                self.stdout.write("\n".join(["BEGIN;", *(f"{statement};" for statement in statements), "COMMIT;"]))
                return
            for statement in statements:
                cursor.execute(statement)
        self.stdout.write(
            f"Granted {role} what Gatehouse needs on {len(schema.tables)} table(s) of schema {schema.name}: read and "
            "append only on the audit trail, read only on the migration record, read and write on the rest."
        )
