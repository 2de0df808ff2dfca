"""The audit trail: one service writes it, each event chained to the one before, append-only on PostgreSQL."""

import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from audit.integrity import verify_chain
from audit.models import GENESIS_HASH, AuditEvent
from audit.services import audit_record


def tamper_as_superuser(on_postgres: bool) -> None:
    """What a database superuser can do: switch triggers off for the session. verify_audit must still notice."""
    if on_postgres:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")


def record(n: int = 0, **extra) -> AuditEvent:
    return audit_record(verb="read", actor=None, channel="task", summary=f"event {n}", **extra)


@pytest.mark.django_db
def test_each_event_holds_the_hash_of_the_one_before(f):
    agent = f.AgentFactory()
    first = record(1)
    second = audit_record(
        verb="read", actor=agent, channel="api", summary="read 4471", record_id="4471", input={"fields": ["name"]}
    )
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert second.actor == agent.slug and second.actor_type == "agent"
    second.refresh_from_db()
    assert second.compute_hash() == second.hash
    assert verify_chain().ok


@pytest.mark.django_db
def test_hostile_input_is_stored_and_still_verifies():
    record(
        input={"text": "nul\x00byte", "nan": float("nan"), "inf": float("inf"), "nested": [{"\x00key": "ü😀"}]},
        record_id="44\x0071",
    )
    event = AuditEvent.objects.get()
    assert event.input["text"] == "nul\ufffdbyte"
    assert event.input["nan"] == "nan"
    assert verify_chain().ok


@pytest.mark.django_db
def test_a_human_actor_is_the_person_of_the_event(f):
    user = f.UserFactory(username="dana")
    event = audit_record(verb="approved", actor=user, channel="admin", summary="approved")
    assert (event.actor_type, event.actor, event.person) == ("human", "dana", user)


@pytest.mark.django_db
def test_verify_audit_names_an_edited_event(on_postgres):
    events = [record(n) for n in range(3)]
    tamper_as_superuser(on_postgres)
    AuditEvent.objects.filter(pk=events[1].pk).update(summary="nothing to see")
    with pytest.raises(CommandError, match=f"event {events[1].pk} was changed"):
        call_command("verify_audit")
    if on_postgres:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")


@pytest.mark.django_db
def test_verify_audit_names_the_event_after_a_deleted_one(on_postgres):
    events = [record(n) for n in range(3)]
    tamper_as_superuser(on_postgres)
    AuditEvent.objects.filter(pk=events[1].pk).delete()
    report = verify_chain()
    assert not report.ok and report.broken_at == events[2].pk and report.checked == 1
    if on_postgres:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")


@pytest.mark.django_db
def test_verify_audit_passes_on_an_intact_chain(capsys):
    for n in range(5):
        record(n)
    call_command("verify_audit")
    assert "intact: 5 event(s)" in capsys.readouterr().out


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgres_refuses_update_and_delete_of_audit_events():
    event = record()
    for statement in (
        "UPDATE audit_auditevent SET summary = 'edited' WHERE id = %s",
        "DELETE FROM audit_auditevent WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement, [event.pk])
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(summary="edited")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    event.refresh_from_db()
    assert event.summary == "event 0"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_leave_one_unbroken_chain():
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(25):
                with transaction.atomic():
                    record(n * 100 + i)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    report = verify_chain()
    assert report.ok and report.checked == 100
    assert AuditEvent.objects.values("prev_hash").distinct().count() == 100  # no two events claim the same parent
