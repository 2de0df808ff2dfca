"""`export_audit`: the admin's export to a file or stdout, with its progress on stderr."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.models import AuditEvent
from audit.services import audit_record

pytestmark = pytest.mark.django_db


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def events(f):
    crm, billing = f.SystemFactory(slug="crm"), f.SystemFactory(slug="billing")
    for number in range(5):
        audit_record(
            verb=Verb.READ, channel=Channel.API, system=crm, record_id=f"44{number}", summary=f"read 44{number} – ✓"
        )
    audit_record(verb=Verb.READ, channel=Channel.API, system=billing, record_id="9", summary="=HYPERLINK(1)")
    return AuditEvent.objects.order_by("id")


def test_export_writes_json_lines_of_the_chosen_system_to_a_file(events, tmp_path):
    target = tmp_path / "crm.jsonl"
    out, err = io.StringIO(), Terminal()
    call_command("export_audit", str(target), "--format", "jsonl", "--system", "crm", stdout=out, stderr=err)
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["record_id"] for line in lines] == ["440", "441", "442", "443", "444"]
    assert lines[0]["summary"] == "read 440 – ✓"
    assert out.getvalue() == f"Exported 5 event(s) as jsonl to {target}.\n"
    assert err.getvalue().endswith("export_audit: 5/5 events (100%), 0 s\x1b[K\n")


def test_export_streams_csv_to_stdout_with_formulas_defused(events):
    out, err = io.StringIO(), io.StringIO()
    call_command("export_audit", "-", stdout=out, stderr=err)
    rows = list(csv.DictReader(io.StringIO(out.getvalue().lstrip("\ufeff"))))
    assert len(rows) == 6
    assert rows[-1]["summary"] == "'=HYPERLINK(1)"
    assert rows[0]["summary"] == "read 440 – ✓"
    assert err.getvalue() == ""  # a short run off a terminal prints no progress


def test_export_takes_a_window_and_refuses_a_bad_date(events, tmp_path):
    target = tmp_path / "window.jsonl"
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    call_command("export_audit", str(target), "--format", "jsonl", "--until", tomorrow, stdout=io.StringIO())
    assert len(target.read_text().splitlines()) == 6
    out = io.StringIO()
    call_command("export_audit", str(target), "--format", "jsonl", "--since", tomorrow, stdout=out)
    assert target.read_text() == ""
    assert out.getvalue().startswith("Exported 0 event(s)")
    with pytest.raises(CommandError, match="not an ISO 8601 date"):
        call_command("export_audit", str(target), "--until", "last tuesday")
