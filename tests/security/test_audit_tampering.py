"""Tampering with the audit trail as the application's database role: PostgreSQL refuses every way to change it.

The suite connects as a superuser, so each test becomes a throwaway role. One holds every table privilege on
audit_auditevent (what an application role might be granted by mistake): the refusal comes from the triggers of
migrations 0003 and 0008, not from missing grants. Another is granted by `grant_app_role`, as production's is: its
refusal comes first from the privileges it lacks (tests/audit/test_app_role.py runs the same with two login roles on a
database of their own)."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from psycopg import sql

from audit.integrity import verify_and_checkpoint
from audit.models import AuditEvent
from audit.services import audit_record
from gatehouse.checks import audit_trail_out_of_reach

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

TAMPERING = {
    "update": "UPDATE audit_auditevent SET summary = 'nothing happened'",
    "delete": "DELETE FROM audit_auditevent",
    "truncate": "TRUNCATE audit_auditevent CASCADE",
}


@pytest.fixture
def as_app_role():
    """Switch this test's transaction to a non-superuser role granted everything on the audit table."""
    role = f"gatehouse_app_{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} NOLOGIN NOSUPERUSER")  # rolled back with the test's transaction
        cursor.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        cursor.execute(f"GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO {role}")
        cursor.execute(f"GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public TO {role}")
        cursor.execute(f"SET LOCAL ROLE {role}")
    return role


@pytest.mark.parametrize("statement", TAMPERING.values(), ids=TAMPERING.keys())
def test_the_application_role_cannot_change_audit_events(as_app_role, statement):
    audit_record(verb="read", actor=None, channel="task", summary="what really happened")
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # else TRUNCATE stops at the insert's pending FK checks
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    assert AuditEvent.objects.filter(summary="what really happened").count() == 1


def test_the_application_role_cannot_switch_the_triggers_off(as_app_role):
    """The one bypass (the suite's own flush uses it) needs a superuser: `session_replication_role`."""
    with pytest.raises(DatabaseError, match="permission denied"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")


# --- The role `grant_app_role` sets up: refused by missing privileges before any trigger is reached ---------------


@pytest.fixture
def granted_role():
    """A fresh role granted by `grant_app_role` (all rolled back with the test's transaction), not yet switched to."""
    role = f"gatehouse_app_{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} NOLOGIN NOSUPERUSER")
    call_command("grant_app_role", role, stdout=io.StringIO())
    return role


def become(role: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {role}")


def test_gatehouse_works_as_the_granted_role(granted_role):
    become(granted_role)
    for n in range(3):
        audit_record(verb="read", actor=None, channel="task", summary=f"event {n}")
    full = verify_and_checkpoint(full=True)
    audit_record(verb="read", actor=None, channel="task", summary="one more")
    incremental = verify_and_checkpoint(full=False)
    assert (full.ok, incremental.ok, incremental.checked) == (True, True, 4)
    assert incremental.checkpoint.previous_id == full.checkpoint.pk


REFUSED_BEFORE_THE_TRIGGERS = {
    **TAMPERING,
    "update-checkpoint": "UPDATE audit_auditcheckpoint SET event_count = 0",
    "delete-checkpoint": "DELETE FROM audit_auditcheckpoint",
    "delete-verification": "DELETE FROM audit_auditverification",
    "disable-trigger": "ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_no_update_delete",
    "disable-checkpoint-trigger": "ALTER TABLE audit_auditcheckpoint DISABLE TRIGGER USER",
}


@pytest.mark.parametrize("statement", REFUSED_BEFORE_THE_TRIGGERS.values(), ids=REFUSED_BEFORE_THE_TRIGGERS.keys())
def test_the_granted_role_is_refused_by_privileges_not_only_by_the_triggers(granted_role, statement):
    audit_record(verb="read", actor=None, channel="task", summary="what really happened")
    verify_and_checkpoint(full=True)
    become(granted_role)
    with pytest.raises(DatabaseError) as refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    assert "append-only" not in str(refused.value)
    assert "permission denied" in str(refused.value) or "must be owner" in str(refused.value)


def test_check_deploy_warns_about_a_superuser_and_not_about_the_granted_role(granted_role):
    (warning,) = audit_trail_out_of_reach()  # the suite connects as a superuser
    assert warning.id == "gatehouse.W002" and "it is a superuser" in warning.msg
    assert "grant_app_role" in warning.hint
    become(granted_role)
    assert audit_trail_out_of_reach() == []


def test_check_deploy_names_each_grant_too_many(granted_role):
    with connection.cursor() as cursor:
        cursor.execute(f"GRANT UPDATE, TRUNCATE ON audit_auditevent TO {granted_role}")
        cursor.execute(f"GRANT DELETE ON audit_auditcheckpoint TO {granted_role}")
    become(granted_role)
    (warning,) = audit_trail_out_of_reach()
    assert "it holds UPDATE on audit_auditevent, TRUNCATE on audit_auditevent, DELETE on audit_auditcheckpoint" in (
        warning.msg
    )


def test_grant_app_role_prints_its_sql_without_running_it(granted_role):
    other = f"gatehouse_app_{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {other} NOLOGIN NOSUPERUSER")
    out = io.StringIO()
    call_command("grant_app_role", other, "--print", stdout=out)
    printed = out.getvalue()
    assert printed.startswith("BEGIN;\n") and printed.endswith("COMMIT;\n")
    assert [line for line in printed.splitlines() if '"audit_auditevent"' in line] == [
        f'REVOKE ALL ON TABLE "public"."audit_auditevent" FROM "{other}";',
        f'GRANT SELECT, INSERT ON TABLE "public"."audit_auditevent" TO "{other}";',
    ]
    assert 'GRANT UPDATE ("finished_at", "ok", "checked", "broken_at", "reason", "checkpoint_id") ON TABLE' in printed
    assert f'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE "public"."governance_system" TO "{other}";' in printed
    assert f'GRANT SELECT ON TABLE "public"."django_migrations" TO "{other}";' in printed
    assert "TRUNCATE" not in printed and "OWNER" not in printed
    with connection.cursor() as cursor:
        cursor.execute("SELECT has_table_privilege(%s, 'audit_auditevent', 'SELECT')", [other])
        assert cursor.fetchone() == (False,)


def test_grant_app_role_names_the_role_as_an_identifier_only(granted_role):
    odd = f'gatehouse "app"; DROP TABLE audit_auditevent; -- {uuid.uuid4().hex[:6]}'
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(odd)).as_string())
    call_command("grant_app_role", odd, stdout=io.StringIO())
    with connection.cursor() as cursor:
        cursor.execute("SELECT has_table_privilege(%s, 'audit_auditevent', 'INSERT')", [odd])
        assert cursor.fetchone() == (True,)
        cursor.execute("SELECT to_regclass('audit_auditevent') IS NOT NULL")
        assert cursor.fetchone() == (True,)  # the name's SQL stayed a name


@pytest.mark.parametrize("case", ["missing", "superuser", "owns-a-table", "may-set-replica", "itself"])
def test_grant_app_role_refuses_a_role_grants_would_not_bind(case):
    role = f"gatehouse_app_{uuid.uuid4().hex[:12]}"
    setup = {
        "missing": [],
        "superuser": [f"CREATE ROLE {role} SUPERUSER"],
        "owns-a-table": [f"CREATE ROLE {role}", f"ALTER TABLE governance_system OWNER TO {role}"],
        "may-set-replica": [f"CREATE ROLE {role}", f"GRANT SET ON PARAMETER session_replication_role TO {role}"],
        "itself": [],
    }[case]
    with connection.cursor() as cursor:
        for statement in setup:
            cursor.execute(statement)
        cursor.execute("SELECT current_user")
        current = cursor.fetchone()[0]
    words = {
        "missing": "There is no database role",
        "superuser": "it is a superuser",
        "owns-a-table": "owns governance_system",
        "may-set-replica": "it may set session_replication_role",
        "itself": "is the role running this command",
    }[case]
    with pytest.raises(CommandError, match=words):
        call_command("grant_app_role", current if case == "itself" else role, stdout=io.StringIO())


def test_grant_app_role_refuses_a_database_without_roles(monkeypatch):
    monkeypatch.setattr(connection, "vendor", "sqlite")
    with pytest.raises(CommandError, match="grant_app_role is for PostgreSQL"):
        call_command("grant_app_role", "gatehouse_app", "--print", stdout=io.StringIO())
