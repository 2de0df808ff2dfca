"""Legacy batch systems: a drop folder polled into events, each file once, every bad row quarantined with a reason."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from connectors.base import PermanentError, RecordNotFound
from connectors.legacy_batch import services as batch_services
from connectors.legacy_batch.config import LegacyBatchConfig
from connectors.legacy_batch.connector import LegacyBatchConnector, parse_batch
from connectors.legacy_batch.services import batch_poll, batch_systems_due
from connectors.models import BatchFile, BatchPoll, Event, QuarantinedRow
from connectors.registry import connector_for
from connectors.tasks import poll_batch_system
from console.demo import LEGACY_INVENTORY_CONFIG
from governance.choices import Role, WriteMode
from governance.models import System
from tests import factories

HEADER = "ITEM_NO,WHSE,QTY_ON_HAND,AS_OF\n"
STOCK = HEADER + "A-100,EAST,12,2026-11-20\nA-200,EAST,0,2026-11-20\nA-100,WEST,7,2026-11-20\n"


def config(**changes) -> LegacyBatchConfig:
    return LegacyBatchConfig.parse(LEGACY_INVENTORY_CONFIG | {"drop_folder": "/srv/drop"} | changes)


# --- fixtures and helpers -----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _srv_drop_root(settings):
    """Settings parsed here name folders under /srv, as a deployment's would: listed as its drop root."""
    settings.GATEHOUSE_DROP_ROOTS = [*settings.GATEHOUSE_DROP_ROOTS, "/srv"]


@pytest.fixture
def inventory(demo) -> System:
    """The demo's legacy-inventory system; its drop folder is under this test's own var/."""
    return System.objects.get(slug="legacy-inventory")


def folder(system: System) -> Path:
    return Path(system.connector_config["drop_folder"])


def drop(system: System, name: str, content: str | bytes, *, age: float = 60) -> Path:
    """A file as the batch system leaves it: written, then left alone for `age` seconds (past the settle time)."""
    path = folder(system) / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def poll(system: System, django_capture_on_commit_callbacks):
    """One poll, with the moves that wait for each file's commit run as they would outside the test transaction."""
    with django_capture_on_commit_callbacks(execute=True):
        return batch_poll(system=system, channel="command")


def stock(system: System) -> list[tuple[str, str, dict]]:
    return [(e.key, e.record_id, e.data) for e in Event.objects.filter(system=system).order_by("id")]


def left_in(system: System, subfolder: str = "") -> list[str]:
    path = folder(system) / subfolder if subfolder else folder(system)
    return sorted(p.name for p in path.iterdir() if p.is_file()) if path.is_dir() else []


def reasons(batch_file: BatchFile) -> dict[int, str]:
    return dict(QuarantinedRow.objects.filter(file=batch_file).values_list("line", "reason"))


@pytest.fixture
def polled(inventory, django_capture_on_commit_callbacks):
    return lambda: poll(inventory, django_capture_on_commit_callbacks)


# --- configuration ------------------------------------------------------------------------------------------------


def test_the_demo_mapping_names_file_columns_event_fields_record_and_version():
    parsed = config()
    assert parsed.columns["QTY_ON_HAND"] == "quantity"
    assert parsed.record_id == ("sku", "warehouse") and parsed.version == "as_of"
    assert parsed.event_fields == ["sku", "warehouse", "quantity", "as_of"]
    assert (parsed.every, parsed.format, parsed.encoding, parsed.settle_seconds) == (60, "csv", "utf-8", 5)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sftp": {"host": "batch.example.com"}}, "SFTP is not supported yet"),
        ({"drop_folder": "relative/path"}, "absolute path"),
        ({"every": 0}, '"every" must be a whole number'),
        ({"encoding": "klingon"}, "not an encoding"),
        ({"record_id": "item"}, "Not a mapped field: item"),
        ({"version": ""}, 'Set "version"'),
        ({"types": {"quantity": "float"}}, "Type of 'quantity'"),
        ({"columns": {"A": "sku", "B": "sku"}}, "same field"),
        ({"delimiter": ";;"}, "one character"),
        ({"fields": [{"field": "sku", "start": 1, "end": 5}]}, "fixed-width setting"),
        ({"pattern": "../*.csv"}, "cannot contain"),
        ({"colour": "blue"}, "Unknown connector setting(s): colour"),
    ],
)
def test_a_bad_setting_is_refused_with_what_to_fix(changes, message):
    with pytest.raises(ValidationError) as caught:
        config(**changes)
    assert message in " ".join(caught.value.messages)


def test_fixed_width_fields_may_not_overlap():
    layout = [{"field": "sku", "start": 1, "end": 10}, {"field": "as_of", "start": 10, "end": 17}]
    with pytest.raises(ValidationError, match="overlap"):
        LegacyBatchConfig.parse(
            {"drop_folder": "/srv", "format": "fixed_width", "fields": layout, "record_id": "sku", "version": "as_of"}
        )


@pytest.mark.django_db
def test_saving_a_batch_system_checks_its_settings(inventory):
    inventory.connector_config = {**inventory.connector_config, "sftp": {"host": "batch.example.com"}}
    with pytest.raises(ValidationError) as caught:
        inventory.full_clean()
    assert "SFTP is not supported yet" in str(caught.value.message_dict["connector_config"])


# --- parsing ------------------------------------------------------------------------------------------------------


def test_rows_become_typed_event_data_keyed_by_record_and_version():
    parsed = parse_batch(config(), STOCK.encode())
    assert not parsed.bad and not parsed.rejected
    assert [(row.line, row.key) for row in parsed.rows] == [
        (2, "A-100:EAST@2026-11-20"),
        (3, "A-200:EAST@2026-11-20"),
        (4, "A-100:WEST@2026-11-20"),
    ]
    assert parsed.rows[0].data == {"sku": "A-100", "warehouse": "EAST", "quantity": 12, "as_of": "2026-11-20"}


def test_columns_are_found_by_header_name_in_any_order_and_extra_columns_are_ignored():
    text = "AS_OF;NOTE;QTY_ON_HAND;WHSE;ITEM_NO\r\n20261120;recount;5;EAST;A-1\r\n"
    parsed = parse_batch(config(delimiter=";", types={"quantity": "int", "as_of": "date:%Y%m%d"}), text.encode())
    assert [row.data for row in parsed.rows] == [
        {"sku": "A-1", "warehouse": "EAST", "quantity": 5, "as_of": "2026-11-20"}
    ]


def test_a_declared_encoding_reads_a_windows_export():
    text = HEADER + "Crème-1,EAST,3,2026-11-20\n"
    parsed = parse_batch(config(encoding="cp1252"), text.encode("cp1252"))
    assert parsed.rows[0].data["sku"] == "Crème-1" and not parsed.bad


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column():
    assert len(parse_batch(config(), b"\xef\xbb\xbf" + STOCK.encode()).rows) == 3


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("A-1,EAST,twelve,2026-11-20", "quantity: 'twelve' is not a whole number"),
        ("A-1,EAST,12,20/11/2026", "as_of: '20/11/2026' is not a date (ISO 8601)"),
        (",EAST,12,2026-11-20", "sku is empty (it names the record or its version)"),
        ("A-1,EAST,12", "has 3 of the header's 4 columns"),
        ("A-1,EAST,12,2026-11-20,extra", "has 5 of the header's 4 columns"),
        ('A-1,"EAST"X,12,2026-11-20', "not readable as CSV"),
        ("A-1,EAST\x00,12,2026-11-20", "contains a NUL byte"),
    ],
)
def test_each_kind_of_bad_row_is_quarantined_with_its_reason(line, reason):
    parsed = parse_batch(config(), (HEADER + line + "\nA-2,EAST,1,2026-11-20\n").encode())
    assert [(bad.line, reason in bad.reason) for bad in parsed.bad] == [(2, True)], parsed.bad
    assert [row.line for row in parsed.rows] == [3]


def test_a_row_in_another_encoding_is_quarantined_and_shown_with_its_bytes():
    content = HEADER.encode() + "A-1,MÜNCHEN,1,2026-11-20\n".encode("latin-1") + b"A-2,EAST,1,2026-11-20\n"
    parsed = parse_batch(config(), content)
    [bad] = parsed.bad
    assert bad.reason == "not valid utf-8: byte 0xDC (is the file in another encoding?)"
    assert bad.raw == "A-1,M\\xdcNCHEN,1,2026-11-20"
    assert [row.record_id for row in parsed.rows] == ["A-2:EAST"]


def test_a_cut_off_last_line_is_quarantined_even_when_its_columns_look_complete():
    parsed = parse_batch(config(), (STOCK + "A-300,EAST,4").encode())
    assert [(bad.line, bad.reason) for bad in parsed.bad] == [
        (5, "the last line has no line ending: the file looks cut off; has 3 of the header's 4 columns")
    ]
    parsed = parse_batch(config(), (STOCK + "A-300,EAST,4,2026-11-2").encode())
    assert parsed.bad[0].reason == "the last line has no line ending: the file looks cut off"
    parsed = parse_batch(config(), (STOCK + 'A-300,"EAST').encode())
    assert parsed.bad[0].reason.startswith("a quoted value is never closed")


def test_a_system_that_writes_no_final_line_ending_can_say_so():
    parsed = parse_batch(config(final_newline=False), (STOCK + "A-300,EAST,4,2026-11-20").encode())
    assert not parsed.bad and len(parsed.rows) == 4


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "The file is empty"),
        (
            b"SKU,WAREHOUSE,QTY,DATE\nA-1,EAST,1,2026-11-20\n",
            "The header lacks column(s) ITEM_NO, WHSE, QTY_ON_HAND, AS_OF",
        ),
        (b"ITEM_NO,WHSE,WHSE,QTY_ON_HAND,AS_OF\n", "names column(s) WHSE more than once"),
        (STOCK.encode("utf-16"), "The header line is not valid utf-8"),
    ],
)
def test_a_bad_header_rejects_the_whole_file(content, reason):
    parsed = parse_batch(config(), content)
    assert reason in parsed.rejected
    assert not parsed.rows and not parsed.bad


FIXED = {
    "drop_folder": "/srv/drop",
    "format": "fixed_width",
    "header": "ITEM_NO   WHSE  QTY AS_OF",
    "fields": [
        {"field": "sku", "start": 1, "end": 10},
        {"field": "warehouse", "start": 11, "end": 16},
        {"field": "quantity", "start": 17, "end": 20},
        {"field": "as_of", "start": 21, "end": 28},
    ],
    "record_id": ["sku", "warehouse"],
    "version": "as_of",
    "types": {"quantity": "int", "as_of": "date:%Y%m%d"},
}


def test_a_fixed_width_file_is_cut_by_its_layout_and_a_short_line_quarantined():
    text = "ITEM_NO   WHSE  QTY AS_OF\nA-100     EAST    1220261120\nA-200     EAST     0202611\n"
    parsed = parse_batch(LegacyBatchConfig.parse(FIXED), text.encode())
    assert [row.data for row in parsed.rows] == [
        {"sku": "A-100", "warehouse": "EAST", "quantity": 12, "as_of": "2026-11-20"}
    ]
    assert [(bad.line, bad.reason) for bad in parsed.bad] == [(3, "is 26 characters long; the layout needs 28")]
    assert "the layout expects" in parse_batch(LegacyBatchConfig.parse(FIXED), b"SKU WHSE\n").rejected


# --- polling: files into events, once ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_csv_drop_becomes_events_in_file_order_and_moves_to_processed(inventory, polled):
    drop(inventory, "stock-1120.csv", STOCK)
    report = polled()
    assert report.summary() == (
        "legacy-inventory: 1 file(s) (1 processed); 3 new event(s), 0 duplicate row(s), 0 row(s) quarantined."
    )
    assert stock(inventory) == [
        (
            "A-100:EAST@2026-11-20",
            "A-100:EAST",
            {"sku": "A-100", "warehouse": "EAST", "quantity": 12, "as_of": "2026-11-20"},
        ),
        (
            "A-200:EAST@2026-11-20",
            "A-200:EAST",
            {"sku": "A-200", "warehouse": "EAST", "quantity": 0, "as_of": "2026-11-20"},
        ),
        (
            "A-100:WEST@2026-11-20",
            "A-100:WEST",
            {"sku": "A-100", "warehouse": "WEST", "quantity": 7, "as_of": "2026-11-20"},
        ),
    ]
    assert Event.objects.filter(system=inventory).first().source == "stock-1120.csv:2"
    batch_file = BatchFile.objects.get()
    assert (batch_file.status, batch_file.rows_read, batch_file.events_created) == ("processed", 3, 3)
    assert left_in(inventory) == [] and left_in(inventory, "processed") == [f"{batch_file.pk}-stock-1120.csv"]
    assert batch_file.moved_to == str(folder(inventory) / "processed" / f"{batch_file.pk}-stock-1120.csv")
    audit = AuditEvent.objects.filter(system=inventory).latest("id")
    assert (audit.verb, audit.actor, audit.outcome) == ("read", "gatehouse", "processed")
    assert audit.input["events"] == 3 and audit.input["file"] == "stock-1120.csv"
    assert "3 new event(s)" in audit.summary


@pytest.mark.django_db
def test_every_row_of_a_faulty_file_is_an_event_a_duplicate_or_quarantined_with_its_reason(inventory, polled):
    content = (
        HEADER.encode()
        + b"A-1,EAST,5,2026-11-20\n"
        + b"A-2,EAST,lots,2026-11-20\n"
        + "A-3,MÜNCHEN,1,2026-11-20\n".encode("latin-1")
        + b"A-1,EAST,5,2026-11-20\n"  # the same row again
        + b"A-1,EAST,6,2026-11-20\n"  # the same record and version, other values
        + b"A-4,EAST,2,2026-11-20\n"
        + b"A-5,EAST,9"  # cut off
    )
    drop(inventory, "faulty.csv", content)
    polled()
    batch_file = BatchFile.objects.get()
    assert [key for key, _, _ in stock(inventory)] == ["A-1:EAST@2026-11-20", "A-4:EAST@2026-11-20"]
    assert reasons(batch_file) == {
        3: "quantity: 'lots' is not a whole number",
        4: "not valid utf-8: byte 0xDC (is the file in another encoding?)",
        6: "conflicts with line 2 of this file: same record A-1:EAST and version 2026-11-20, other values",
        8: "the last line has no line ending: the file looks cut off; has 3 of the header's 4 columns",
    }
    assert QuarantinedRow.objects.get(file=batch_file, line=8).raw == "A-5,EAST,9"
    counts = (batch_file.rows_read, batch_file.events_created, batch_file.rows_duplicate, batch_file.rows_quarantined)
    assert counts == (7, 2, 1, 4)
    assert batch_file.rows_read == batch_file.events_created + batch_file.rows_duplicate + batch_file.rows_quarantined


@pytest.mark.django_db
def test_the_same_file_arriving_twice_makes_no_new_events_and_is_moved_aside_as_a_duplicate(inventory, polled):
    drop(inventory, "stock.csv", STOCK)
    polled()
    drop(inventory, "stock-again.csv", STOCK)
    report = polled()
    assert [(outcome.name, outcome.status) for outcome in report.files] == [("stock-again.csv", "duplicate")]
    assert Event.objects.filter(system=inventory).count() == 3
    original, copy = BatchFile.objects.order_by("id")
    assert (copy.status, copy.duplicate_of, copy.events_created) == ("duplicate", original, 0)
    assert copy.reason == f"Same content as stock.csv (file #{original.pk}), already processed: no new events."
    assert left_in(inventory, "duplicates") == [f"{copy.pk}-stock-again.csv"] and left_in(inventory) == []
    assert AuditEvent.objects.filter(system=inventory).latest("id").outcome == "duplicate"


@pytest.mark.django_db
def test_rows_repeated_in_a_later_file_are_counted_as_duplicates_not_doubled(inventory, polled):
    drop(inventory, "monday.csv", STOCK, age=120)
    drop(inventory, "tuesday.csv", STOCK + "A-300,EAST,4,2026-11-21\nA-200,EAST,1,2026-11-20\n", age=60)
    report = polled()
    assert [(o.name, o.events, o.duplicates, o.quarantined) for o in report.files] == [
        ("monday.csv", 3, 0, 0),
        ("tuesday.csv", 1, 3, 1),
    ]
    tuesday = BatchFile.objects.get(name="tuesday.csv")
    assert reasons(tuesday) == {
        6: "conflicts with the event from monday.csv:3: same record A-200:EAST and version 2026-11-20, other values"
    }
    assert Event.objects.filter(system=inventory).count() == 4


@pytest.mark.django_db
def test_a_cut_off_file_completed_later_adds_only_its_missing_row(inventory, polled):
    whole = STOCK + "A-300,EAST,4,2026-11-20\n"
    drop(inventory, "stock.csv", whole[:-8])
    polled()
    assert reasons(BatchFile.objects.get()) == {5: "the last line has no line ending: the file looks cut off"}
    drop(inventory, "stock.csv", whole)
    report = polled()
    assert [(o.events, o.duplicates, o.quarantined) for o in report.files] == [(1, 3, 0)]
    assert [key for key, _, _ in stock(inventory)][-1] == "A-300:EAST@2026-11-20"


@pytest.mark.django_db
def test_a_file_with_a_bad_header_is_moved_to_rejected_whole_with_its_reason(inventory, polled):
    drop(inventory, "renamed-columns.csv", "SKU,WHSE,QTY,AS_OF\nA-1,EAST,1,2026-11-20\n")
    polled()
    batch_file = BatchFile.objects.get()
    assert batch_file.status == "rejected"
    assert batch_file.reason.startswith(
        "The header lacks column(s) ITEM_NO, QTY_ON_HAND (found: SKU, WHSE, QTY, AS_OF)"
    )
    assert not Event.objects.exists() and not QuarantinedRow.objects.exists()
    assert left_in(inventory, "rejected") == [f"{batch_file.pk}-renamed-columns.csv"]
    audit = AuditEvent.objects.filter(system=inventory).latest("id")
    assert audit.outcome == "rejected" and "set aside whole: The header lacks" in audit.summary


@pytest.mark.django_db
def test_files_still_being_written_hidden_or_partial_are_left_for_later(inventory, polled):
    drop(inventory, "fresh.csv", STOCK, age=0)
    drop(inventory, "upload.csv.part", STOCK)
    drop(inventory, ".hidden.csv", STOCK)
    report = polled()
    assert report.files == [] and report.unsettled == 1
    assert report.summary() == "legacy-inventory: no new files; 1 file(s) still being written."
    assert left_in(inventory) == [".hidden.csv", "fresh.csv", "upload.csv.part"]


@pytest.mark.django_db
def test_a_file_recorded_but_never_moved_is_only_moved_at_the_next_poll(inventory, polled, monkeypatch):
    drop(inventory, "stock.csv", STOCK)
    monkeypatch.setattr(LegacyBatchConnector, "move_aside", lambda *args: (_ for _ in ()).throw(OSError("disk gone")))
    report = polled()
    assert report.files[0].reason == "recorded, but not moved: disk gone"
    assert left_in(inventory) == ["stock.csv"] and BatchFile.objects.get().moved_to == ""
    monkeypatch.undo()
    report = polled()
    assert [(o.status, o.events, o.reason) for o in report.files] == [("processed", 0, "recorded earlier; moved now")]
    assert BatchFile.objects.count() == 1 and Event.objects.count() == 3
    assert left_in(inventory) == [] and BatchFile.objects.get().moved_to


@pytest.mark.django_db
def test_a_missing_drop_folder_is_reported_and_remembered_not_raised(inventory, polled):
    folder(inventory).rmdir()
    report = polled()
    assert report.error == f"The drop folder {folder(inventory)} does not exist (or is not a folder)."
    assert BatchPoll.objects.get(system=inventory).last_error == report.error
    with pytest.raises(CommandError, match="Not polled: legacy-inventory"):
        call_command("poll_legacy", "--system", "legacy-inventory")


@pytest.mark.django_db
def test_a_poll_while_another_holds_the_system_skips_it_and_an_expired_claim_is_taken_over(inventory, polled):
    drop(inventory, "stock.csv", STOCK)
    BatchPoll.objects.create(
        system=inventory, claimed_by="someone", claimed_until=timezone.now() + timedelta(minutes=5)
    )
    assert polled().busy and not Event.objects.exists()
    BatchPoll.objects.filter(system=inventory).update(claimed_until=timezone.now() - timedelta(seconds=1))
    report = polled()
    assert not report.busy and report.files[0].events == 3
    assert BatchPoll.objects.get(system=inventory).claimed_by == ""


@pytest.mark.django_db
def test_poll_legacy_polls_now_and_prints_what_became_of_each_file(
    inventory, capsys, django_capture_on_commit_callbacks
):
    drop(inventory, "a.csv", STOCK, age=120)
    drop(inventory, "b.csv", "nonsense\n", age=60)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("poll_legacy")
    out = capsys.readouterr().out
    assert "legacy-inventory: 2 file(s) (1 processed, 1 rejected); 3 new event(s)" in out
    assert "  b.csv: rejected — The header lacks column(s)" in out
    with pytest.raises(CommandError, match="No batch system 'crm'"):
        call_command("poll_legacy", "--system", "crm")


# --- schedule -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_each_batch_system_is_polled_on_its_own_interval(inventory, django_capture_on_commit_callbacks):
    other = factories.SystemFactory(
        slug="legacy-orders",
        integration_pattern="event_queue",
        connector_kind="legacy_batch",
        connector_config=LEGACY_INVENTORY_CONFIG | {"drop_folder": str(folder(inventory)), "every": 3600},
        write_mode=WriteMode.READ_ONLY,
    )
    assert set(batch_systems_due()) == {inventory.pk, other.pk}
    with django_capture_on_commit_callbacks(execute=True):
        assert poll_batch_system(inventory.pk).startswith("legacy-inventory: no new files")
        assert poll_batch_system(inventory.pk) == "legacy-inventory: no new files."  # not due: claim refused
    assert batch_systems_due() == [other.pk]
    BatchPoll.objects.filter(system=inventory).update(last_polled_at=timezone.now() - timedelta(seconds=61))
    assert inventory.pk in batch_systems_due()
    other.write_mode = WriteMode.DISABLED
    other.save()
    assert other.pk not in batch_systems_due()


@pytest.mark.django_db
def test_a_repeated_delivery_of_the_poll_task_does_not_poll_again_before_the_interval(inventory, capsys):
    drop(inventory, "stock.csv", STOCK)
    poll_batch_system(inventory.pk)
    before = BatchPoll.objects.get(system=inventory).last_polled_at
    drop(inventory, "more.csv", HEADER + "A-9,EAST,1,2026-11-20\n")
    poll_batch_system(inventory.pk)
    assert BatchPoll.objects.get(system=inventory).last_polled_at == before
    assert "more.csv" in left_in(inventory)


# --- the connector contract ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_connector_reads_the_latest_reported_version_and_refuses_writes(inventory, polled):
    drop(inventory, "a.csv", STOCK, age=120)
    drop(inventory, "b.csv", HEADER + "A-100,EAST,9,2026-11-21\n", age=60)
    polled()
    connector = connector_for(inventory)
    assert connector.read("events", "A-100:EAST", ["quantity", "as_of"]) == {"quantity": 9, "as_of": "2026-11-21"}
    with pytest.raises(RecordNotFound):
        connector.read("events", "Z-1:EAST")
    with pytest.raises(PermanentError, match="Make it propose-only"):
        connector.execute(None, "A-100:EAST", {}, "key")
    assert connector.health().ok
    folder(inventory).rename(folder(inventory).with_name("gone"))
    assert "does not exist" in connector.health().reason


# --- admin --------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.AUDITORS, Role.OPERATORS, Role.BUSINESS_OWNERS])
def test_files_and_quarantined_rows_are_visible_with_reasons_and_never_editable(client, inventory, polled, role):
    drop(inventory, "faulty.csv", STOCK + "A-2,EAST,lots,2026-11-20\n")
    polled()
    batch_file = BatchFile.objects.get()
    client.force_login(factories.UserFactory(username="viewer", roles=[role]))
    page = client.get(reverse("admin:connectors_batchfile_change", args=[batch_file.pk]))
    assert page.status_code == 200
    assert "quantity: &#x27;lots&#x27; is not a whole number" in page.content.decode()
    listing = client.get(reverse("admin:connectors_quarantinedrow_changelist"), {"file__id__exact": batch_file.pk})
    assert listing.status_code == 200 and "A-2,EAST,lots,2026-11-20" in listing.content.decode()
    assert client.get(reverse("admin:connectors_batchpoll_changelist")).status_code == 200
    row = QuarantinedRow.objects.get()
    assert (
        client.post(reverse("admin:connectors_quarantinedrow_delete", args=[row.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert QuarantinedRow.objects.filter(pk=row.pk).exists()


@pytest.mark.django_db
def test_a_batch_systems_admin_page_links_to_its_files(client, inventory):
    client.force_login(factories.UserFactory(username="root", is_superuser=True))
    page = client.get(reverse("admin:governance_system_change", args=[inventory.pk])).content.decode()
    assert reverse("admin:connectors_batchfile_changelist") + f"?system__id__exact={inventory.pk}" in page


# --- the events API -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_agent_with_a_read_grant_pages_through_the_events_with_a_cursor(inventory, polled, agent_client):
    drop(inventory, "stock.csv", STOCK + "A-300,EAST,4,2026-11-20\nA-400,EAST,2,2026-11-20\n")
    polled()
    client = agent_client("collections-agent")
    seen, after = [], 0
    for _ in range(10):
        page = client.get("/api/v1/events", {"system": "legacy-inventory", "after": after, "limit": 2}).json()
        if not page["events"]:
            break
        assert len(page["events"]) <= 2
        seen += [(event["record_id"], event["data"]["quantity"]) for event in page["events"]]
        after = page["next_after"]
    assert seen == [("A-100:EAST", 12), ("A-200:EAST", 0), ("A-100:WEST", 7), ("A-300:EAST", 4), ("A-400:EAST", 2)]
    assert agent_client("reporting-agent").get("/api/v1/events", {"system": "legacy-inventory"}).status_code == 403


# --- PostgreSQL: pollers at the same moment -----------------------------------------------------------------------


def _race(inventory: System, pollers: int) -> list:
    start = threading.Barrier(pollers)
    reports, errors = [], []

    def run() -> None:
        try:
            start.wait()
            reports.append(batch_poll(system=System.objects.get(pk=inventory.pk), channel="task"))
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(pollers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return reports


def _drop_many(inventory: System, files: int) -> int:
    for number in range(files):
        rows = "".join(f"A-{number}-{row},EAST,{row},2026-11-20\n" for row in range(50))
        drop(inventory, f"part-{number:02}.csv", HEADER + rows + "A-shared,EAST,1,2026-11-20\n", age=60 - number)
    return files * 50 + 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_polls_at_once_on_postgresql_take_each_file_once(demo):
    inventory = System.objects.get(slug="legacy-inventory")
    expected = _drop_many(inventory, 6)
    reports = _race(inventory, 2)
    assert sorted(report.busy for report in reports) in ([False, True], [False, False])
    assert Event.objects.filter(system=inventory).count() == expected
    assert BatchFile.objects.filter(status="processed").count() == 6 and left_in(inventory) == []
    assert not BatchFile.objects.exclude(status="processed").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_even_without_the_claim_overlapping_polls_never_double_a_file_or_an_event(demo, monkeypatch):
    """The last line of defence: should two pollers ever overlap (a lease ran out), the unique indexes hold."""
    inventory = System.objects.get(slug="legacy-inventory")
    expected = _drop_many(inventory, 6)
    monkeypatch.setattr(batch_services, "_batch_claim", lambda **kwargs: True)
    monkeypatch.setattr(batch_services, "_batch_renew", lambda **kwargs: True)
    reports = _race(inventory, 4)
    assert Event.objects.filter(system=inventory).count() == expected
    assert BatchFile.objects.filter(status="processed").count() == 6
    processed = [o for report in reports for o in report.files if o.status == "processed" and o.events]
    assert sorted(o.name for o in processed) == [f"part-{n:02}.csv" for n in range(6)]
    assert sum(o.events for o in processed) == expected


# --- the running stack --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_csv_drop_is_polled_into_events_an_agent_reads_with_a_cursor_on_the_running_stack(live):
    inventory = System.objects.get(slug="legacy-inventory")
    rows = [f"B-{n},EAST,{n},2026-11-20" for n in range(1, 8)]
    drop(inventory, "nightly.csv", HEADER + "\n".join(rows) + "\n")
    call_command("poll_legacy", "--system", "legacy-inventory")
    agent = live.agent("collections-agent")
    seen, after, pages = [], 0, 0
    while True:
        response = agent.get("/api/v1/events", params={"system": "legacy-inventory", "after": after, "limit": 2})
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["events"]:
            break
        pages += 1
        seen += [event["record_id"] for event in page["events"]]
        after = page["next_after"]
    assert seen == [f"B-{n}:EAST" for n in range(1, 8)] and pages == 4
    call_command("poll_legacy", "--system", "legacy-inventory")  # nothing new: nothing doubled
    assert agent.get("/api/v1/events", params={"after": after}).json()["events"] == []
