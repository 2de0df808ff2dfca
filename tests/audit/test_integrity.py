"""Tampering with the audit trail four ways (edit, delete, reorder, truncate): verify_audit names the event each time.

A truncated tail leaves a chain that still holds; the signed checkpoint of its head is what gives it away.
"""

from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit.checkpoints import checkpoint_signature
from audit.integrity import verify_and_checkpoint, verify_chain
from audit.models import AuditCheckpoint, AuditEvent, AuditVerification
from audit.services import audit_record
from audit.tasks import verify_and_checkpoint_task


def record(n: int) -> AuditEvent:
    return audit_record(verb="read", actor=None, channel="task", record_id="4471", summary=f"event {n}")


def assert_verify_audit_names(event_id: int, words: str) -> None:
    with pytest.raises(CommandError, match=rf"event {event_id}\b.*{words}") as caught:
        call_command("verify_audit")
    assert caught.value.returncode == 1


@pytest.mark.django_db
def test_edit_is_named(superuser_session):
    events = [record(n) for n in range(5)]
    AuditEvent.objects.filter(pk=events[2].pk).update(summary="nothing to see")
    assert_verify_audit_names(events[2].pk, "was changed")


@pytest.mark.django_db
def test_delete_is_named_at_the_event_after(superuser_session):
    events = [record(n) for n in range(5)]
    AuditEvent.objects.filter(pk=events[2].pk).delete()
    assert_verify_audit_names(events[3].pk, "does not follow")


@pytest.mark.django_db
def test_reorder_swapping_two_rows_content_is_named(superuser_session):
    events = [record(n) for n in range(5)]
    columns = [field.attname for field in AuditEvent._meta.concrete_fields if field.attname != "id"]
    first, second = (AuditEvent.objects.filter(pk=e.pk).values(*columns).get() for e in (events[1], events[3]))
    AuditEvent.objects.filter(pk=events[3].pk).update(hash="swapping")  # hash is unique
    AuditEvent.objects.filter(pk=events[1].pk).update(**second)
    AuditEvent.objects.filter(pk=events[3].pk).update(**first)
    assert verify_chain().broken_at == events[1].pk
    assert_verify_audit_names(events[1].pk, "does not follow")


@pytest.mark.django_db
def test_truncated_tail_after_a_checkpoint_is_named(superuser_session):
    events = [record(n) for n in range(6)]
    assert verify_and_checkpoint().ok
    AuditEvent.objects.filter(pk__in=[events[4].pk, events[5].pk]).delete()
    assert verify_chain().broken_at == events[5].pk
    assert_verify_audit_names(events[5].pk, "is missing.*truncated tail")


@pytest.mark.django_db
def test_a_truncated_tail_hidden_behind_new_events_is_still_named(superuser_session):
    events = [record(n) for n in range(4)]
    verify_and_checkpoint()
    AuditEvent.objects.filter(pk=events[3].pk).delete()
    record(10)  # chains onto event 2: the chain itself holds again
    report = verify_chain()
    assert not report.ok and report.broken_at == events[3].pk


@pytest.mark.django_db
def test_without_tampering_the_chain_grows_past_its_checkpoint_and_verifies():
    for n in range(3):
        record(n)
    first = verify_and_checkpoint()
    for n in range(3, 5):
        record(n)
    second = verify_and_checkpoint()
    assert first.ok and second.ok and second.checked == 5
    assert (first.checkpoint.event_count, second.checkpoint.event_count) == (3, 5)
    call_command("verify_audit")


@pytest.mark.django_db
def test_a_checkpoint_not_signed_with_the_digest_key_is_refused():
    events = [record(n) for n in range(3)]
    AuditCheckpoint.objects.create(
        last_event_id=events[1].pk, last_hash=events[1].hash, event_count=2, signature="0" * 64
    )
    report = verify_chain()
    assert not report.ok and "does not carry Gatehouse's signature" in report.reason


@pytest.mark.django_db
def test_the_signature_depends_on_the_key_from_settings(settings):
    signed = checkpoint_signature(last_event_id=7, last_hash="a" * 64, event_count=7)
    settings.GATEHOUSE_AUDIT_DIGEST_KEY = "another key"
    assert checkpoint_signature(last_event_id=7, last_hash="a" * 64, event_count=7) != signed


@pytest.mark.django_db
def test_the_periodic_task_records_each_result_and_a_broken_chain_gets_no_new_checkpoint(superuser_session):
    events = [record(n) for n in range(3)]
    assert verify_and_checkpoint_task() is True
    late = record(3)
    AuditEvent.objects.filter(pk=late.pk).update(summary="edited")
    assert verify_and_checkpoint_task() is False
    good, bad = AuditVerification.objects.order_by("id")
    assert (good.ok, good.checked, good.checkpoint.last_event_id) == (True, 3, events[2].pk)
    assert (bad.ok, bad.broken_at, bad.checkpoint) == (False, late.pk, None)
    assert "was changed" in bad.reason
    assert AuditCheckpoint.objects.count() == 1


@pytest.mark.django_db
def test_verify_audit_can_record_and_checkpoint_like_the_job(capsys):
    for n in range(2):
        record(n)
    call_command("verify_audit", "--checkpoint")
    assert "intact: 2 event(s)" in capsys.readouterr().out
    assert AuditVerification.objects.get().ok and AuditCheckpoint.objects.get().event_count == 2


def test_the_job_is_scheduled_every_five_minutes():
    entry = settings.CELERY_BEAT_SCHEDULE["audit-verify-and-checkpoint"]
    assert entry == {"task": "audit.verify_and_checkpoint", "schedule": 300.0}
    from gatehouse.celery import app

    app.loader.import_default_modules()
    assert "audit.verify_and_checkpoint" in app.tasks


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgres_refuses_to_change_or_delete_a_checkpoint():
    record(0)
    checkpoint = verify_and_checkpoint().checkpoint
    for statement in (
        "UPDATE audit_auditcheckpoint SET event_count = 0 WHERE id = %s",
        "DELETE FROM audit_auditcheckpoint WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement, [checkpoint.pk])


# --- The cheap check every five minutes: only what was appended since the last checkpoint -------------------------


@pytest.mark.django_db
def test_the_job_walks_everything_first_then_only_new_events_then_everything_again_a_day_later():
    for n in range(3):
        record(n)
    first = verify_and_checkpoint()
    record(3)
    second = verify_and_checkpoint()
    assert (first.full, second.full) == (True, False)
    assert second.ok and second.checked == 4 and second.checkpoint.event_count == 4
    AuditVerification.objects.filter(pk=first.pk).update(started_at=first.started_at - timedelta(hours=25))
    assert verify_and_checkpoint().full


@pytest.mark.django_db
def test_the_incremental_check_catches_an_edit_after_the_checkpoint_and_a_truncated_tail(superuser_session):
    events = [record(n) for n in range(5)]
    verify_and_checkpoint(full=True)
    newer = [record(n) for n in range(5, 8)]
    AuditEvent.objects.filter(pk=newer[1].pk).update(summary="edited")
    assert verify_chain(since_checkpoint=True).broken_at == newer[1].pk
    AuditEvent.objects.filter(pk__in=[events[4].pk, *(e.pk for e in newer)]).delete()
    report = verify_chain(since_checkpoint=True)
    assert report.broken_at == events[4].pk and "truncated tail" in report.reason


@pytest.mark.django_db
def test_the_incremental_check_catches_a_deletion_older_than_the_checkpoint_by_the_count(superuser_session):
    events = [record(n) for n in range(5)]
    verify_and_checkpoint(full=True)
    AuditEvent.objects.filter(pk=events[1].pk).delete()
    report = verify_chain(since_checkpoint=True)
    assert report.broken_at == events[4].pk and "rewritten up to it" in report.reason
    assert verify_chain().broken_at == events[2].pk  # the full walk names the first break


@pytest.mark.django_db
def test_an_edit_older_than_the_checkpoint_is_left_to_the_full_walk(superuser_session):
    events = [record(n) for n in range(4)]
    verify_and_checkpoint(full=True)
    AuditEvent.objects.filter(pk=events[1].pk).update(summary="edited")
    assert verify_chain(since_checkpoint=True).ok  # the documented trade-off of the five-minute check
    assert verify_chain().broken_at == events[1].pk


@pytest.mark.django_db
def test_a_full_walk_under_way_is_not_started_twice_but_a_stale_one_does_not_block():
    for n in range(2):
        record(n)
    verify_and_checkpoint(full=True)
    AuditVerification.objects.update(started_at=timezone.now() - timedelta(hours=25))  # the last full pass is old
    running = AuditVerification.objects.create(ok=False, full=True, reason="running")
    assert not verify_and_checkpoint().full  # another worker is walking: only the new events now
    AuditVerification.objects.filter(pk=running.pk).update(started_at=timezone.now() - timedelta(hours=1))
    assert verify_and_checkpoint().full  # that walk died long ago


def test_the_job_has_its_own_time_limit_and_is_acknowledged_on_receipt():
    assert verify_and_checkpoint_task.acks_late is False
    assert verify_and_checkpoint_task.soft_time_limit >= 1800 > settings.CELERY_TASK_TIME_LIMIT
