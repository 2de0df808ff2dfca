"""What every benchmark does first: bench settings, and a fresh database of its own when DATABASE_URL is set."""

from __future__ import annotations

import os
import tempfile


def prepare_environment(db_name: str) -> str:
    """Point this process (and its children) at a fresh benchmark database `db_name`; answers which database kind.

    Call it before django.setup(). Without DATABASE_URL the embedded default (SQLite under a fresh VAR_DIR) is used.
    """
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ.setdefault("GATEHOUSE_ENV", "development")  # a bench on this machine: generated secrets, loopback
    os.environ.setdefault("GATEHOUSE_VAR_DIR", tempfile.mkdtemp(prefix=f"{db_name}-"))
    if os.environ.get("DATABASE_URL"):
        import psycopg

        with psycopg.connect(os.environ["DATABASE_URL"], dbname="postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {db_name}")
        os.environ["GATEHOUSE_DB_NAME"] = db_name
        return "PostgreSQL"
    return "SQLite"
