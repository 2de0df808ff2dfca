"""Checkpoints are a chain of their own, and the log keeps a copy of each: an intruder with database access who deletes
the newest checkpoints to rewrite the events after the one left, or alters or deletes any checkpoint, is named.

Each intruder here works as a database superuser does: triggers off for the session (`superuser_session`), which
also switches off the foreign keys' checks.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from audit.checkpoint_log import compare_with_log
from audit.checkpoints import COPY_LOGGER, checkpoint_is_genuine, checkpoint_signature, verify_checkpoints
from audit.integrity import verify_and_checkpoint, verify_chain
from audit.models import AuditCheckpoint, AuditEvent, AuditVerification
from audit.services import audit_record
from core.logs import JsonFormatter

pytestmark = pytest.mark.django_db

PLAIN = logging.Formatter(settings.LOGGING["formatters"]["plain"]["format"])


def record(summary: str) -> AuditEvent:
    return audit_record(verb="read", actor=None, channel="task", record_id="4471", summary=summary)


@pytest.fixture
def sign(django_capture_on_commit_callbacks):
    """`sign(events)`: append that many events, then run the job (a full walk); its checkpoint, logged on commit."""

    def sign(events: int = 2) -> AuditCheckpoint:
        for n in range(events):
            record(f"event {AuditEvent.objects.count() + n}")
        with django_capture_on_commit_callbacks(execute=True):
            verification = verify_and_checkpoint(full=True)
        assert verification.ok and verification.checkpoint is not None
        return verification.checkpoint

    return sign


@pytest.fixture
def log_file(caplog, tmp_path):
    """`log_file(formatter)`: the log the operator's pipeline kept, as that formatter wrote it, among other lines."""
    caplog.set_level(logging.INFO)

    def write(formatter: logging.Formatter = PLAIN) -> Path:
        noise = logging.getLogger("gatehouse.access")
        forged = logging.LogRecord(noise.name, logging.WARNING, __file__, 1, "GET /audit checkpoint id=1", None, None)
        copies = [entry for entry in caplog.records if entry.name == COPY_LOGGER]
        path = tmp_path / "gatehouse.log"
        path.write_text("".join(formatter.format(entry) + "\n" for entry in [forged, *copies, forged]))
        return path

    return write


def delete_rows(model, *ids: int) -> None:
    """As with SQL: no Django collector, so whatever pointed at the rows still does."""
    with connection.cursor() as cursor:
        marks = ", ".join(["%s"] * len(ids))
        cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE id IN ({marks})", ids)


def rewrite_after(checkpoint: AuditCheckpoint) -> None:
    """The events after a checkpoint deleted and others appended instead: the event chain itself holds again."""
    AuditEvent.objects.filter(pk__gt=checkpoint.last_event_id).delete()
    for n in range(3):
        record(f"nothing happened {n}")


def assert_verify_audit_says(words: str, *options: str) -> None:
    with pytest.raises(CommandError, match=words) as caught:
        call_command("verify_audit", *options, stdout=io.StringIO(), stderr=io.StringIO())
    assert caught.value.returncode == 1


def test_each_checkpoint_is_signed_after_the_one_before(sign):
    first, second, third = sign(), sign(), sign()
    assert [c.version for c in (first, second, third)] == [2, 2, 2]
    assert (first.previous_id, first.previous_signature) == (None, "")
    assert (second.previous_id, second.previous_signature) == (first.pk, first.signature)
    assert (third.previous_id, third.previous_signature) == (second.pk, second.signature)
    assert all(checkpoint_is_genuine(c) for c in AuditCheckpoint.objects.all())
    assert verify_chain().ok and verify_chain(since_checkpoint=True).ok
    call_command("verify_audit", stdout=io.StringIO(), stderr=io.StringIO())


def test_a_job_that_finds_the_head_already_signed_writes_no_second_checkpoint(sign):
    checkpoint = sign()
    assert verify_and_checkpoint().checkpoint == checkpoint
    assert AuditCheckpoint.objects.count() == 1


@pytest.mark.parametrize("how", ["as_django_deletes", "as_sql_deletes"])
def test_deleting_the_newest_checkpoints_to_rewrite_the_events_after_the_one_left_is_named(
    superuser_session, sign, how
):
    kept, *newest = sign(3), sign(), sign()
    if how == "as_django_deletes":  # the verification rows let go of them (SET NULL)
        AuditCheckpoint.objects.filter(pk__in=[c.pk for c in newest]).delete()
        words = r"verification \d+ passed and signed a checkpoint, which is gone: checkpoints were deleted"
    else:  # the verification rows still name them
        delete_rows(AuditCheckpoint, *(c.pk for c in newest))
        words = rf"checkpoint {newest[0].pk} is gone, yet verification \d+ recorded it: checkpoints were deleted"
    rewrite_after(kept)
    report = verify_chain()
    assert not report.ok and report.checked == 0
    assert "checkpoints were deleted" in report.reason
    assert_verify_audit_says(words)
    # The rows pointing at nothing are let go, or the database's own check at the test's end refuses them (SQLite).
    AuditVerification.objects.filter(checkpoint_id__in=[c.pk for c in newest]).update(checkpoint=None)


def test_when_the_verification_rows_go_too_only_the_log_copy_names_the_lost_checkpoint(
    superuser_session, sign, log_file
):
    kept, lost = sign(3), sign()
    log = log_file()
    AuditVerification.objects.filter(checkpoint=lost).delete()
    delete_rows(AuditCheckpoint, lost.pk)
    rewrite_after(kept)
    assert verify_chain().ok  # a careful intruder leaves nothing in the database to compare with
    next_one = sign(0)  # and the next run of the job signs the rewritten chain
    assert next_one.previous_id == kept.pk and verify_chain().ok
    words = rf"checkpoint {lost.pk} is missing from the database: .*line 3.*it was deleted"
    assert_verify_audit_says(words, "--checkpoint-log", str(log))
    # Compared before anything is signed: --checkpoint does not sign the rewritten chain's new head first.
    record("after the rewrite")
    assert_verify_audit_says(words, "--checkpoint", "--checkpoint-log", str(log))
    assert AuditCheckpoint.objects.count() == 2


def test_a_checkpoint_deleted_from_the_middle_breaks_the_next_ones_link(superuser_session, sign):
    first, middle, last = sign(), sign(), sign()
    AuditVerification.objects.filter(checkpoint=middle).delete()  # nothing else in the database remembers it
    delete_rows(AuditCheckpoint, middle.pk)
    words = rf"checkpoint {last.pk} was signed after checkpoint {middle.pk}, which is gone \(the one before it now is "
    words += rf"checkpoint {first.pk}\)"
    assert verify_chain().broken_at == last.last_event_id
    assert_verify_audit_says(words)
    report = verify_chain(since_checkpoint=True)  # the five-minute job checks the newest link
    assert not report.ok and f"signed after checkpoint {middle.pk}, which is gone" in report.reason


def test_the_first_checkpoint_deleted_breaks_the_second_ones_link(superuser_session, sign):
    first, second = sign(), sign()
    AuditVerification.objects.filter(checkpoint=first).delete()
    delete_rows(AuditCheckpoint, first.pk)
    report = verify_chain()
    assert not report.ok
    assert (
        f"checkpoint {second.pk} was signed after checkpoint {first.pk}, which is gone (no checkpoint" in report.reason
    )


@pytest.mark.parametrize(
    "change",
    [
        {"event_count": 1},
        {"last_hash": "0" * 64},
        {"previous_id": None, "previous_signature": ""},
        {"previous_signature": "f" * 64},
        {"version": 1},
        {"version": 3},
    ],
    ids=["count", "hash", "unlinked", "link", "downgraded", "unknown-version"],
)
def test_an_altered_checkpoint_is_refused(superuser_session, sign, change):
    sign()
    altered = sign()
    sign()
    AuditCheckpoint.objects.filter(pk=altered.pk).update(**change)
    report = verify_chain()
    assert not report.ok and report.broken_at == AuditCheckpoint.objects.get(pk=altered.pk).last_event_id
    assert f"checkpoint {altered.pk} does not carry Gatehouse's signature" in report.reason


def test_checkpoints_from_before_the_chain_still_verify_and_the_first_linked_one_follows_the_newest(sign):
    """Existing databases hold version 1 checkpoints, signed alone; they are checked as they were signed."""
    events = [record(f"event {n}") for n in range(3)]
    old = []
    for count, head in ((2, events[1]), (3, events[2])):
        signature = checkpoint_signature(last_event_id=head.pk, last_hash=head.hash, event_count=count, version=1)
        old.append(
            AuditCheckpoint.objects.create(
                last_event_id=head.pk, last_hash=head.hash, event_count=count, signature=signature
            )
        )
    assert [c.version for c in AuditCheckpoint.objects.order_by("id")] == [1, 1]  # the database's default
    assert verify_chain().ok
    linked = sign()
    assert (linked.version, linked.previous_id, linked.previous_signature) == (2, old[1].pk, old[1].signature)
    assert verify_chain().ok and verify_checkpoints().problem is None


def test_each_checkpoint_is_logged_once_committed_as_one_structured_line(
    sign, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.INFO)
    checkpoint = sign()
    (entry,) = [entry for entry in caplog.records if entry.name == COPY_LOGGER]
    fields = {
        "checkpoint_id": checkpoint.pk,
        "version": 2,
        "last_event_id": checkpoint.last_event_id,
        "last_hash": checkpoint.last_hash,
        "event_count": checkpoint.event_count,
        "previous_id": None,
        "previous_signature": "",
        "signature": checkpoint.signature,
    }
    line = json.loads(JsonFormatter().format(entry))
    assert {key: line[key] for key in fields} == fields and line["logger"] == COPY_LOGGER
    assert f"audit checkpoint id={checkpoint.pk} version=2 " in line["message"]
    record("one more")
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        assert verify_and_checkpoint(full=True).checkpoint.pk > checkpoint.pk
        raise RuntimeError("rolled back: the log must not keep a checkpoint the database never had")
    assert len([entry for entry in caplog.records if entry.name == COPY_LOGGER]) == 1


@pytest.mark.parametrize("formatter", [PLAIN, JsonFormatter()], ids=["plain", "json"])
def test_checkpoint_log_copies_that_match_pass(sign, log_file, formatter):
    sign(), sign()
    log = log_file(formatter)
    out = io.StringIO()
    call_command("verify_audit", "--checkpoint-log", str(log), stdout=out, stderr=io.StringIO())
    assert "2 copy(ies) of 2 checkpoint(s) match the database; 0 checkpoint(s)" in out.getvalue()
    assert "Audit chain intact: 4 event(s)." in out.getvalue()


def test_checkpoint_log_names_a_checkpoint_that_differs_from_its_copy(superuser_session, sign, log_file):
    sign()
    changed = sign()
    log = log_file(JsonFormatter())
    AuditCheckpoint.objects.filter(pk=changed.pk).update(event_count=1)
    words = rf"checkpoint {changed.pk} in the database differs from its copy in .*: event_count is 1 in the database"
    assert_verify_audit_says(words, "--checkpoint-log", str(log))


def test_checkpoint_log_refuses_a_copy_it_cannot_vouch_for_and_a_log_without_copies(sign, log_file, tmp_path):
    checkpoint = sign()
    log = log_file()
    forged = log.read_text().replace(checkpoint.last_hash, "0" * 64)
    comparison = compare_with_log(forged.splitlines(), source="forged.log")
    assert comparison.problem is not None
    assert f"copy of checkpoint {checkpoint.pk} in forged.log (line 2) does not carry" in comparison.problem
    empty = tmp_path / "empty.log"
    empty.write_text("2026-12-01 10:00:00,000 INFO gatehouse.access GET /healthz 200\n")
    assert_verify_audit_says("holds no checkpoint copies", "--checkpoint-log", str(empty))
    assert_verify_audit_says("Cannot read", "--checkpoint-log", str(tmp_path / "missing.log"))


def test_checkpoint_log_reads_the_lines_of_the_release_before_the_chain(sign):
    """Version 1 copies, as `audit.integrity` logged them, behind a prefix a log shipper added."""
    events = [record(f"event {n}") for n in range(2)]
    signature = checkpoint_signature(last_event_id=events[1].pk, last_hash=events[1].hash, event_count=2, version=1)
    old = AuditCheckpoint.objects.create(
        last_event_id=events[1].pk, last_hash=events[1].hash, event_count=2, signature=signature
    )
    line = (
        f"Dec 01 10:00:00 host gatehouse[42]: 2026-12-01 10:00:00,000 INFO audit.integrity audit checkpoint {old.pk}: "
        f"2 event(s) up to #{events[1].pk} hash {events[1].hash} signature {signature}"
    )
    comparison = compare_with_log([line], source="old.log")
    assert (comparison.problem, comparison.copies, comparison.matched) == (None, 1, 1)
    lost = compare_with_log([line.replace(f"checkpoint {old.pk}:", f"checkpoint {old.pk + 1}:")], source="old.log")
    assert lost.problem is not None and f"checkpoint {old.pk + 1} is missing from the database" in lost.problem
