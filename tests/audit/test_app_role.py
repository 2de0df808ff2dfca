"""Two database roles, as production runs them: the owner migrates, the application's role may only read and append
to the audit trail, and `check --deploy` tells them apart.

A database of its own on the suite's PostgreSQL server, owned by a fresh owner role and migrated by it in a
subprocess (`manage.py migrate`), as a release does; `grant_app_role` then grants a fresh application role; that role
connects on its own (psycopg, and Gatehouse in a subprocess). Roles and database are dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
AUDIT_TABLES = ["audit_auditevent", "audit_auditcheckpoint", "audit_auditverification"]

# What a role holding every grant but no ownership still cannot do; the refusal comes from privileges, not triggers.
REFUSED = {
    "update-event": "UPDATE audit_auditevent SET summary = 'nothing happened'",
    "delete-event": "DELETE FROM audit_auditevent",
    "truncate-event": "TRUNCATE audit_auditevent CASCADE",
    "disable-trigger": "ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_no_update_delete",
    "disable-user-triggers": "ALTER TABLE audit_auditevent DISABLE TRIGGER USER",
    "drop-trigger": "DROP TRIGGER audit_event_no_truncate ON audit_auditevent",
    "update-checkpoint": "UPDATE audit_auditcheckpoint SET event_count = 0",
    "delete-checkpoint": "DELETE FROM audit_auditcheckpoint",
    "disable-checkpoint-trigger": "ALTER TABLE audit_auditcheckpoint DISABLE TRIGGER audit_checkpoint_no_update_delete",
    "delete-verification": "DELETE FROM audit_auditverification",
    "update-verification-start": "UPDATE audit_auditverification SET started_at = now()",
    "replica-mode": "SET session_replication_role = replica",
    "rewind-sequence": "SELECT setval(pg_get_serial_sequence('audit_auditevent', 'id'), 1)",
    "replace-function": "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN OLD; END $$",
}

# Gatehouse, as the application role: append to the chain (audit_chain_next), run the job twice (a full walk, then
# the five-minute one: checkpoint and verification rows inserted, the verification's result updated), verify.
APPEND_AND_CHECK = """
from audit.integrity import verify_and_checkpoint, verify_chain
from audit.services import audit_record
for n in range(3):
    audit_record(verb="read", actor=None, channel="task", summary=f"as the app role {n}")
first = verify_and_checkpoint(full=True)
audit_record(verb="read", actor=None, channel="task", summary="one more")
second = verify_and_checkpoint(full=False)
print("RESULT", first.ok, second.ok, second.checked, second.checkpoint.previous_id == first.checkpoint.pk)
"""


@dataclass
class TwoRoles:
    name: str
    owner: str
    app: str
    urls: dict[str, str]
    var_dir: Path

    def manage(self, *argv: str, role: str = "owner", ok: bool = True) -> subprocess.CompletedProcess[str]:
        """`manage.py` in a subprocess whose DATABASE_URL connects as that role ("owner" or "app")."""
        # Nothing of the suite's own environment: not its services, nor DJANGO_ALLOW_ASYNC_UNSAFE (the browser's).
        prefixes = ("GATEHOUSE_", "DATABASE_URL", "REDIS_URL", "DJANGO_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        env.update(
            {
                "DATABASE_URL": self.urls[role],
                "GATEHOUSE_ENV": "development",
                "GATEHOUSE_VAR_DIR": str(self.var_dir),
                "GATEHOUSE_SECRET_KEY": settings.SECRET_KEY,
            }
        )
        result = subprocess.run(
            [sys.executable, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def connect(self, role: str = "app") -> psycopg.Connection:
        return psycopg.connect(self.urls[role], autocommit=True)


def _server(**overrides: str) -> str:
    return make_conninfo(settings.DATABASE_URL, **overrides)


def _drop(admin: psycopg.Connection, name: str, roles: list[str]) -> None:
    """Everything the test made, whatever stage it reached."""
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    for role in roles:
        if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture(scope="module")
def two_roles(tmp_path_factory) -> Iterator[TwoRoles]:
    suffix = uuid.uuid4().hex[:10]
    name, owner, app = f"gatehouse_roles_{suffix}", f"gatehouse_owner_{suffix}", f"gatehouse_app_{suffix}"
    server = conninfo_to_dict(settings.DATABASE_URL)
    host, port = server.get("host", "127.0.0.1"), server.get("port", "5432")
    passwords = {owner: secrets.token_hex(16), app: secrets.token_hex(16)}
    with psycopg.connect(_server(dbname="postgres"), autocommit=True) as admin:
        try:
            for role, password in passwords.items():
                admin.execute(
                    sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(password)
                    )
                )
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
            urls = {
                label: f"postgresql://{role}:{passwords[role]}@{host}:{port}/{name}"
                for label, role in (("owner", owner), ("app", app))
            }
            roles = TwoRoles(name, owner, app, urls, tmp_path_factory.mktemp("two-roles"))
            roles.manage("migrate", "--noinput", "-v", "0")
            yield roles
        finally:
            _drop(admin, name, [app, owner])


@pytest.fixture(scope="module")
def granted(two_roles: TwoRoles) -> TwoRoles:
    result = two_roles.manage("grant_app_role", two_roles.app)
    assert f"Granted {two_roles.app} what Gatehouse needs" in result.stdout
    return two_roles


def test_after_the_grants_the_owner_still_owns_the_audit_tables_and_the_app_role_owns_nothing(granted):
    with granted.connect("owner") as owner:
        owners = owner.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE oid = ANY(%s::regclass[])", [AUDIT_TABLES]
        ).fetchall()
        owned_by_app = owner.execute("SELECT count(*) FROM pg_class WHERE relowner = %s::regrole", [granted.app])
        assert owners == [(granted.owner,)] and owned_by_app.fetchone() == (0,)
        member = owner.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", [granted.app, granted.owner]).fetchone()
        assert member == (False,)  # nor may it act as the owner


def test_gatehouse_as_the_app_role_appends_to_the_chain_and_runs_the_job(granted):
    result = granted.manage("shell", "-c", APPEND_AND_CHECK, role="app")
    assert "RESULT True True 4 True" in result.stdout, result.stdout + result.stderr
    assert "Audit chain intact: 4 event(s)." in granted.manage("verify_audit", role="app").stdout
    with granted.connect() as app:
        assert app.execute("SELECT count(*) FROM audit_auditevent").fetchone() == (4,)
        drawn = app.execute("SELECT out_hash FROM audit_chain_next(1, %s, '{', '}')", ["0" * 64]).fetchone()
        assert len(drawn[0]) == 64  # the append's function, called directly
        app.execute("DELETE FROM django_session")  # the rest of the schema: read and write
        app.execute("INSERT INTO django_session VALUES ('k', 'v', now())")


@pytest.mark.parametrize("statement", REFUSED.values(), ids=REFUSED.keys())
def test_the_app_role_can_neither_change_nor_unprotect_the_audit_trail(granted, statement):
    with granted.connect() as app:
        before = app.execute("SELECT count(*), max(hash) FROM audit_auditevent").fetchone()
        with pytest.raises(errors.InsufficientPrivilege) as refused:
            app.execute(statement)
        assert "append-only" not in str(refused.value)  # refused for want of privilege, before any trigger fires
        assert "permission denied" in str(refused.value) or "must be owner" in str(refused.value)
        assert app.execute("SELECT count(*), max(hash) FROM audit_auditevent").fetchone() == before


def test_check_deploy_warns_for_the_owner_and_not_for_the_app_role(granted):
    owner = granted.manage("check", "--deploy", role="owner")
    assert "gatehouse.W002" in owner.stderr
    assert f"'{granted.owner}' that Gatehouse connects as can rewrite the audit trail: it owns" in owner.stderr
    assert "grant_app_role <app role>" in owner.stderr
    app = granted.manage("check", "--deploy", role="app")
    assert "gatehouse.W002" not in app.stdout + app.stderr


def test_grant_app_role_refuses_the_owner_itself_and_an_owner_as_the_app_role(granted):
    itself = granted.manage("grant_app_role", granted.owner, ok=False)
    assert itself.returncode == 1 and "is the role running this command" in itself.stderr
    reversed_roles = granted.manage("grant_app_role", granted.owner, role="app", ok=False)
    assert reversed_roles.returncode == 1 and "Grants cannot hold back" in reversed_roles.stderr


def test_check_deploy_says_plainly_when_the_database_does_not_answer(tmp_path):
    unreachable = TwoRoles("none", "nobody", "nobody", {"owner": "postgresql://nobody@127.0.0.1:9/none"}, tmp_path)
    result = unreachable.manage("check", "--deploy")
    assert "gatehouse.I002" in result.stdout + result.stderr
    assert "gatehouse.W002" not in result.stdout + result.stderr
