"""Tampering with the audit trail as the application's database role: PostgreSQL refuses every way to change it.

The suite connects as a superuser, so each test becomes a throwaway role that holds every table privilege on
audit_auditevent (what an application role might be granted by mistake): the refusal comes from the triggers of
migrations 0003 and 0008, not from missing grants."""

from __future__ import annotations

import uuid

import pytest
from django.db import DatabaseError, connection, transaction

from audit.models import AuditEvent
from audit.services import audit_record

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
