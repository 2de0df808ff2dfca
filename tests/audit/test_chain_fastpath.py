"""The PostgreSQL append path: one statement locks the chain, reads its head, draws the id and hashes in SQL."""

import hashlib
import json
import threading
import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection, transaction

from audit.integrity import verify_chain
from audit.models import GENESIS_HASH, AuditEvent
from audit.services import audit_record

HOSTILE = [
    {},
    {"fields": ["name", "credit_limit"]},
    {"prev_hash": "x", "nested": {"prev_hash": '","prev_hash":"'}, "text": 'quote " and \\ backslash'},
    {"text": "ü😀 — non-ASCII", "n": 1.5, "big": 10**30, "none": None, "list": [True, False, None]},
    {"\x00key": "nul\x00", "nan": float("nan")},
]


@pytest.mark.parametrize("content", HOSTILE)
def test_chained_parts_wrap_exactly_the_hashed_text(content):
    event = AuditEvent(
        occurred_at=datetime(2026, 11, 24, 4, 30, 1, 123456, tzinfo=UTC),
        verb="read",
        actor_type="agent",
        actor="collections-agent",
        channel="api",
        resource="accounts",
        record_id='44"71',
        proposal_id=uuid.uuid4(),
        input=json.loads(json.dumps(content).replace("NaN", '"nan"')),
        decision={"mode": "auto"},
        state_before=content or None,
        summary='a summary with ,"prev_hash":" inside',
        prev_hash="ab" * 32,
    )
    prefix, suffix = event.chained_parts()
    canonical = json.dumps(event.chained_content(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert prefix + event.prev_hash + suffix == canonical
    assert (prefix + suffix).isascii()
    assert hashlib.sha256((prefix + event.prev_hash + suffix).encode()).hexdigest() == event.compute_hash()


@pytest.mark.django_db
def test_the_returned_event_matches_the_stored_row(f):
    agent = f.AgentFactory()
    first = audit_record(verb="read", actor=None, channel="task", summary="first")
    second = audit_record(
        verb="read",
        actor=agent,
        channel="api",
        summary="read 4471 ü",
        record_id="4471",
        input={"fields": ["name"], "prev_hash": "not this one"},
        state_before={"credit_limit": "2000.00"},
    )
    assert first.prev_hash == GENESIS_HASH and second.prev_hash == first.hash
    assert second.pk is not None and not second._state.adding
    assert second.hash == second.compute_hash()
    stored = AuditEvent.objects.get(pk=second.pk)
    assert (stored.prev_hash, stored.hash) == (second.prev_hash, second.hash)
    assert stored.compute_hash() == stored.hash
    assert verify_chain().ok


@pytest.mark.django_db
def test_an_event_rolled_back_with_its_transaction_leaves_the_chain_intact():
    audit_record(verb="read", actor=None, channel="task", summary="kept 1")
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(verb="read", actor=None, channel="task", summary="rolled back")
        raise RuntimeError
    audit_record(verb="read", actor=None, channel="task", summary="kept 2")
    assert list(AuditEvent.objects.chain_order().values_list("summary", flat=True)) == ["kept 1", "kept 2"]
    assert verify_chain().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_lone_and_transactional_writers_leave_one_chain_in_id_order():
    """Lone events (autocommit, one statement each) racing events inside transactions of two."""
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(20):
                if n % 2:
                    audit_record(verb="read", actor=None, channel="task", summary=f"lone {n}.{i}")
                else:
                    with transaction.atomic():
                        audit_record(verb="read", actor=None, channel="task", summary=f"pair {n}.{i} a")
                        audit_record(verb="read", actor=None, channel="task", summary=f"pair {n}.{i} b")
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    report = verify_chain()
    assert report.ok and report.checked == 3 * 20 + 3 * 40
    assert AuditEvent.objects.values("prev_hash").distinct().count() == report.checked
    # The two events of one transaction are neighbours: nobody appended between them.
    summaries = list(AuditEvent.objects.chain_order().values_list("summary", flat=True))
    for index, summary in enumerate(summaries):
        if summary.endswith(" a"):
            assert summaries[index + 1] == summary[:-1] + "b"
