"""For the benchmark only: audit events appended without the chain's lock, to measure what the chain costs.

`GATEHOUSE_BENCH_CHAIN=off` in a benchmark's web process (bench/urls.py installs this): each event is inserted with
a placeholder link (a random hash) instead of being chained under the advisory lock. Nothing outside bench/ can turn
this on, and a database written this way fails the chain's verification, as it should: the benchmark's database is
thrown away.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.db import connection


def install() -> None:
    from audit import services
    from audit.models import AuditEvent

    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    fields = [f for f in AuditEvent._meta.concrete_fields if f.attname != "id"]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    values = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {table} ({columns}) VALUES ({values}) RETURNING id"  # the model's own names only

    def append_unchained(event: Any) -> None:
        event.prev_hash, event.hash = "0" * 64, secrets.token_hex(32)  # no link, but unique as the column asks
        params = [field.get_db_prep_save(getattr(event, field.attname), connection) for field in fields]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            event.pk = cursor.fetchone()[0]
        event._state.adding = False
        event._state.db = connection.alias

    services._append = append_unchained  # type: ignore[assignment]
