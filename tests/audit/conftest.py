"""Fixtures of the audit tests: what a database superuser can do to the trail."""

from __future__ import annotations

import pytest
from django.db import connection


@pytest.fixture
def superuser_session(on_postgres):
    """What a database superuser can do: switch the append-only triggers off for the session (PostgreSQL).

    The foreign keys' triggers go off with them: a row deleted in this session leaves whatever pointed at it."""
    if on_postgres:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
    yield
    if on_postgres:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")
