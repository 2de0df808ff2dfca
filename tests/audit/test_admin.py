"""The audit changelist for auditors: filters, "last Tuesday", record search, links, exports, no full count."""

import csv
import io
import json
import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.admin import EstimatedCountPaginator
from audit.models import AuditEvent
from audit.services import audit_record
from governance.choices import Role

CHANGELIST = "admin:audit_auditevent_changelist"


@pytest.fixture
def auditor(client, f):
    client.force_login(f.UserFactory(username="casey", roles=[Role.AUDITORS]))
    return client


@pytest.fixture
def trail(f):
    """Two systems, two agents, a person: events a filter can tell apart."""
    crm, billing = f.SystemFactory(slug="crm"), f.SystemFactory(slug="billing")
    collections, support = f.AgentFactory(slug="collections-agent"), f.AgentFactory(slug="support-agent")
    dana = f.UserFactory(username="dana")
    proposal_id = uuid.uuid4()
    audit_record(verb="read", actor=collections, channel="api", system=crm, record_id="4471", summary="c read 4471")
    audit_record(
        verb="proposed",
        actor=collections,
        channel="mcp",
        system=crm,
        record_id="4471",
        proposal_id=proposal_id,
        summary="c proposed on 4471",
    )
    audit_record(verb="approved", actor=dana, channel="admin", system=crm, record_id="4471", proposal_id=proposal_id,
                 summary="dana approved 4471")  # fmt: skip
    audit_record(verb="read", actor=support, channel="api", system=billing, record_id="9", summary="s read billing 9")
    audit_record(verb="denied", actor=support, channel="api", system=crm, record_id="4472", summary="s denied 4472")
    return {"crm": crm, "billing": billing, "collections": collections, "support": support, "dana": dana,
            "proposal_id": proposal_id}  # fmt: skip


def summaries(response) -> set[str]:
    return {event.summary for event in response.context["cl"].result_list}


@pytest.mark.django_db
def test_each_filter_narrows_the_trail(auditor, trail):
    cases = {
        "agent__id__exact": (trail["support"].pk, {"s read billing 9", "s denied 4472"}),
        "system__id__exact": (trail["billing"].pk, {"s read billing 9"}),
        "verb__exact": ("denied", {"s denied 4472"}),
        "person__id__exact": (trail["dana"].pk, {"dana approved 4471"}),
        "channel__exact": ("mcp", {"c proposed on 4471"}),
        "proposal_id": (trail["proposal_id"], {"c proposed on 4471", "dana approved 4471"}),
    }
    for parameter, (value, expected) in cases.items():
        response = auditor.get(reverse(CHANGELIST), {parameter: value})
        assert response.status_code == 200, parameter
        assert summaries(response) == expected, parameter


@pytest.mark.django_db
def test_a_malformed_proposal_or_day_filter_is_an_error_page_not_a_crash(auditor, trail):
    for parameter, value in [("proposal_id", "'; DROP TABLE x; --"), ("day", "last tuesday")]:
        response = auditor.get(reverse(CHANGELIST), {parameter: value})
        assert response.status_code == 302 and "e=1" in response["Location"]


@pytest.mark.django_db
def test_the_day_filter_offers_last_tuesday_by_name_and_keeps_only_that_day(auditor, trail):
    today = timezone.localdate()
    response = auditor.get(reverse(CHANGELIST))
    page = response.content.decode()
    assert f"Today ({today.isoformat()})" in page and f"Yesterday ({today - timedelta(days=1)})" in page
    for back in range(2, 8):
        day = today - timedelta(days=back)
        assert f"{day:%A} {day.isoformat()}" in page  # e.g. "Tuesday 2026-11-17": the pages' one date format
    old = AuditEvent.objects.get(summary="s read billing 9")
    # An event from eight days ago cannot be written with an old date (append-only): filter a day with none.
    assert summaries(auditor.get(reverse(CHANGELIST), {"day": (today - timedelta(days=7)).isoformat()})) == set()
    assert old.summary in summaries(auditor.get(reverse(CHANGELIST), {"day": today.isoformat()}))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "term",
    [
        "4471' OR '1'='1",
        '"4471',
        "%",
        "44%",
        "_",
        "'; DROP TABLE audit_auditevent; --",
        "1) UNION SELECT * FROM auth_user --",
        "ü😀漢字",
        "\\",
        "x" * 10_240,
        "   ",
    ],
)
def test_search_by_record_id_tolerates_hostile_input(auditor, trail, term):
    response = auditor.get(reverse(CHANGELIST), {"q": term})
    assert response.status_code == 200
    found = summaries(response)
    assert found == set() or term.strip() == ""  # nothing matches, or an empty search shows everything
    assert AuditEvent.objects.count() == 5


@pytest.mark.django_db
def test_a_search_with_a_null_character_is_refused_with_a_message_not_an_error(auditor, trail):
    response = auditor.get(reverse(CHANGELIST), {"q": "nul\x00byte"})
    assert response.status_code == 200
    assert "Null characters are not allowed" in response.content.decode()  # Django's search form; no query run


@pytest.mark.django_db
def test_search_finds_a_record_id_exactly_even_when_quoted(auditor, trail):
    assert summaries(auditor.get(reverse(CHANGELIST), {"q": "4471"})) == {
        "c read 4471",
        "c proposed on 4471",
        "dana approved 4471",
    }
    assert len(summaries(auditor.get(reverse(CHANGELIST), {"q": '"4471"'}))) == 3
    assert summaries(auditor.get(reverse(CHANGELIST), {"q": "447"})) == set()  # exact, not a prefix
    audit_record(verb="read", actor=None, channel="api", record_id="ü 😀 %", summary="odd id")
    assert summaries(auditor.get(reverse(CHANGELIST), {"q": "ü 😀 %"})) == {"odd id"}


@pytest.mark.django_db
def test_the_changelist_never_counts_the_whole_table(auditor, trail):
    for filters in ({}, {"verb__exact": "read"}, {"q": "4471"}, {"_facets": "1"}):
        with CaptureQueriesContext(connection) as queries:
            response = auditor.get(reverse(CHANGELIST), filters)
        assert response.status_code == 200
        counts = [query["sql"] for query in queries if re.search(r"COUNT\(", query["sql"], re.IGNORECASE)]
        audit_counts = [sql for sql in counts if "audit_auditevent" in sql]
        assert all("LIMIT" in sql.upper() for sql in audit_counts), audit_counts


@pytest.mark.django_db
def test_only_time_can_be_sorted_by_even_with_a_hand_made_order_parameter(auditor, trail):
    for order in ("3", "-3", "2.5", "1", "-1", "x"):
        with CaptureQueriesContext(connection) as queries:
            response = auditor.get(reverse(CHANGELIST), {"o": order})
        assert response.status_code in (200, 302)
        page_queries = [q["sql"] for q in queries if "ORDER BY" in q["sql"] and "audit_auditevent" in q["sql"]]
        assert all('ORDER BY "audit_auditevent"."occurred_at"' in sql for sql in page_queries), (order, page_queries)


@pytest.mark.django_db
def test_the_paginator_caps_its_count_and_says_so(f):
    for n in range(12):
        audit_record(verb="read", actor=None, channel="task", summary=f"e{n}")

    class Small(EstimatedCountPaginator):
        cap = 10

    filtered = Small(AuditEvent.objects.filter(verb="read").order_by("-id"), 5)
    assert filtered.count == 10 and filtered.approximate and filtered.num_pages == 2
    exact = Small(AuditEvent.objects.filter(summary="e3").order_by("-id"), 5)
    assert exact.count == 1 and not exact.approximate


@pytest.mark.postgres
@pytest.mark.django_db
def test_on_postgres_the_unfiltered_count_is_the_planners_estimate(f):
    for n in range(30):
        audit_record(verb="read", actor=None, channel="task", summary=f"e{n}")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE audit_auditevent")

    class Small(EstimatedCountPaginator):
        cap = 10

    paginator = Small(AuditEvent.objects.order_by("-id"), 5)
    with CaptureQueriesContext(connection) as queries:
        assert paginator.count == 30 and paginator.approximate
    assert not any("COUNT(" in query["sql"].upper() for query in queries)


@pytest.mark.django_db
def test_every_event_links_to_its_record_timeline_and_its_proposal(auditor, trail):
    page = auditor.get(reverse(CHANGELIST)).content.decode()
    day = timezone.localdate().isoformat()
    assert f"{reverse('admin:audit_timeline', args=['crm', '4471'])}?day={day}" in page
    assert reverse("admin:approvals_proposal_change", args=[trail["proposal_id"]]) in page
    event = AuditEvent.objects.get(summary="dana approved 4471")
    detail = auditor.get(reverse("admin:audit_auditevent_change", args=[event.pk])).content.decode()
    assert reverse("admin:audit_timeline", args=["crm", "4471"]) in detail
    assert reverse("admin:approvals_proposal_change", args=[trail["proposal_id"]]) in detail


@pytest.mark.django_db
def test_system_and_agent_pages_link_to_their_audit_trail(client, trail, f):
    client.force_login(f.UserFactory(username="omar", roles=[Role.OPERATORS]))
    system_page = client.get(reverse("admin:governance_system_change", args=[trail["crm"].pk])).content.decode()
    agent_page = client.get(reverse("admin:governance_agent_change", args=[trail["support"].pk])).content.decode()
    assert f"{reverse(CHANGELIST)}?system__id__exact={trail['crm'].pk}" in system_page
    assert f"{reverse(CHANGELIST)}?agent__id__exact={trail['support'].pk}" in agent_page
    response = client.get(reverse(CHANGELIST), {"agent__id__exact": trail["support"].pk})
    assert summaries(response) == {"s read billing 9", "s denied 4472"}


@pytest.mark.django_db
def test_approvers_without_audit_access_see_no_audit_link(client, trail, f):
    client.force_login(f.UserFactory(username="dana2", roles=[Role.APPROVERS]))
    page = client.get(reverse("admin:governance_system_change", args=[trail["crm"].pk])).content.decode()
    assert "audit-trail-link" not in page


# --- Exports ------------------------------------------------------------------------------------------------------


def read_stream(response) -> str:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content).decode()


@pytest.mark.django_db
def test_the_csv_export_streams_the_filtered_rows(auditor, trail):
    response = auditor.get(reverse("admin:audit_export_csv"), {"system__id__exact": trail["crm"].pk, "p": 99})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(read_stream(response).lstrip("\ufeff"))))
    assert [row["summary"] for row in rows] == ["c read 4471", "c proposed on 4471", "dana approved 4471",
                                               "s denied 4472"]  # fmt: skip
    assert {row["system"] for row in rows} == {"crm"}
    assert rows[1]["agent"] == "collections-agent" and rows[2]["person"] == "dana"
    assert rows[1]["proposal_id"] == str(trail["proposal_id"])


@pytest.mark.django_db
def test_the_jsonl_export_streams_one_json_object_per_filtered_event(auditor, trail):
    response = auditor.get(reverse("admin:audit_export_jsonl"), {"agent__id__exact": trail["support"].pk})
    assert response["Content-Type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in read_stream(response).splitlines()]
    assert [event["summary"] for event in events] == ["s read billing 9", "s denied 4472"]
    assert events[0]["hash"] == AuditEvent.objects.get(summary="s read billing 9").hash
    assert events[0]["input"] == {} and events[0]["system"] == "billing"


@pytest.mark.django_db
def test_exports_honour_the_search_and_day_and_refuse_nonsense_filters(auditor, trail):
    today = timezone.localdate().isoformat()
    response = auditor.get(reverse("admin:audit_export_jsonl"), {"q": "4472", "day": today})
    assert [json.loads(line)["summary"] for line in read_stream(response).splitlines()] == ["s denied 4472"]
    assert auditor.get(reverse("admin:audit_export_csv"), {"day": "tuesday"}).status_code == 400


@pytest.mark.django_db
def test_a_csv_cell_that_looks_like_a_formula_is_neutralised(auditor, trail):
    audit_record(verb="read", actor=None, channel="api", record_id="x", summary='=HYPERLINK("http://evil")')
    body = read_stream(auditor.get(reverse("admin:audit_export_csv"), {"q": "x"}))
    assert "'=HYPERLINK" in body


@pytest.mark.django_db
def test_the_changelist_links_to_both_exports_with_its_filters(auditor, trail):
    page = auditor.get(reverse(CHANGELIST), {"verb__exact": "read", "p": 1}).content.decode()
    assert f'{reverse("admin:audit_export_csv")}?verb__exact=read"' in page
    assert f'{reverse("admin:audit_export_jsonl")}?verb__exact=read"' in page


@pytest.mark.django_db
def test_people_without_audit_access_cannot_export(client, trail, f):
    client.force_login(f.UserFactory(username="dana3", roles=[Role.APPROVERS]))
    assert client.get(reverse("admin:audit_export_csv")).status_code == 403
    assert client.get(reverse("admin:audit_export_jsonl")).status_code == 403


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgresqls_copy_and_pythons_csv_writer_give_the_same_cells(trail):
    """On PostgreSQL the CSV is written by `COPY … TO STDOUT`; it must read back cell for cell as the Python path."""
    from audit.exports import csv_by_copy, csv_by_python

    awkward = ["=1+2", 'comma, "quoted"\nnew line', "ünïcødé 😀", "-5", "\t@x", "", "a\rb"]
    for text in awkward:
        audit_record(
            verb="read",
            actor=None,
            channel="api",
            record_id=text[:10] or "empty",
            resource="accounts",
            input={"fields": ["name", text], "nested": {"n": 1.5, "none": None}},
            state_before=None,
            summary=text or "(empty)",
        )
    queryset = AuditEvent.objects.all()

    def cells(chunks) -> list[list[str]]:
        text = b"".join(chunk if isinstance(chunk, bytes) else chunk.encode() for chunk in chunks).decode()
        assert text.startswith("\ufeffid,occurred_at,")
        return list(csv.reader(io.StringIO(text.lstrip("\ufeff"), newline="")))

    from_copy, from_python = cells(csv_by_copy(queryset)), cells(csv_by_python(queryset))
    assert len(from_copy) == AuditEvent.objects.count() + 1
    assert from_copy == from_python
    summaries = [row[13] for row in from_copy[1:]]
    assert "'=1+2" in summaries and "'-5" in summaries and "'\t@x" in summaries and "ünïcødé 😀" in summaries


# --- Systems kept apart, one time format --------------------------------------------------------------------------


@pytest.fixture
def staging_4471(trail, f):
    """crm-staging 4471, as a rollback drill leaves it: the same id as crm 4471, another record."""
    staging = f.SystemFactory(slug="crm-staging")
    audit_record(verb="read", actor=None, channel="task", system=staging, record_id="4471", summary="drill 4471")
    return staging


@pytest.mark.django_db
def test_a_search_for_4471_says_which_system_each_hit_is_on(auditor, trail, staging_4471):
    response = auditor.get(reverse(CHANGELIST), {"q": "4471"})

    assert summaries(response) == {"c read 4471", "c proposed on 4471", "dana approved 4471", "drill 4471"}
    search = response.context["record_search"]
    assert [holder["label"] for holder in search["systems"]] == ["crm 4471", "crm-staging 4471"]
    page = response.content.decode()
    assert "4471 is a record id on 2 systems: 2 different records." in page
    # Each row names its system beside the id, and links that record's own timeline.
    rows = re.findall(r'<td class="field-record_link">(.*?)</td>', page)
    texts = {re.sub(r"<[^>]+>", "", row).strip() for row in rows}
    assert texts == {"crm 4471", "crm-staging 4471"}
    assert reverse("admin:audit_timeline", args=["crm-staging", "4471"]) in page


@pytest.mark.django_db
def test_the_search_takes_crm_4471_and_keeps_to_that_system(auditor, trail, staging_4471):
    response = auditor.get(reverse(CHANGELIST), {"q": "crm 4471"})
    assert summaries(response) == {"c read 4471", "c proposed on 4471", "dana approved 4471"}
    assert summaries(auditor.get(reverse(CHANGELIST), {"q": "crm-staging 4471"})) == {"drill 4471"}
    page = response.content.decode()
    assert "Only <strong>crm 4471</strong> is listed" in page and "The id is another record on" in page
    # The system filter with a bare id narrows the same way, and says so.
    narrowed = auditor.get(reverse(CHANGELIST), {"q": "4471", "system__id__exact": staging_4471.pk})
    assert summaries(narrowed) == {"drill 4471"} and narrowed.context["record_search"]["system"] == staging_4471
    # A word that is no system's slug is part of the id, as before.
    assert summaries(auditor.get(reverse(CHANGELIST), {"q": "nosuch 4471"})) == set()


@pytest.mark.django_db
def test_the_audit_pages_write_times_in_one_format(auditor, trail):
    from audit.models import AuditVerification

    AuditVerification.objects.create(ok=True, checked=5, finished_at=timezone.now())
    moment = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\s|&nbsp;|\u00a0)UTC"
    django_default = r"\b(a\.m\.|p\.m\.|midnight|noon)|\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\.? \d"
    event = AuditEvent.objects.get(summary="dana approved 4471")
    for url in [
        reverse(CHANGELIST),
        reverse("admin:audit_auditevent_change", args=[event.pk]),
        reverse("admin:audit_auditverification_changelist"),
    ]:
        page = auditor.get(url).content.decode()
        assert re.search(moment, page), url
        assert not re.search(django_default, page), (url, re.search(django_default, page))
    changelist = auditor.get(reverse(CHANGELIST)).content.decode()
    whens = re.findall(r'<th class="field-when"><a [^>]*>([^<]*)</a>', changelist)
    assert len(whens) == 5 and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\u00a0UTC", when) for when in whens)
