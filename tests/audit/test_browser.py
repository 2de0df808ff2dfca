"""The CFO's question in a real browser: "what did the agent do with account 4471 today?" — a few clicks, no SQL."""

import csv
import io
import os
from pathlib import Path

import pytest
from django.utils import timezone

from approvals.drills import rollback_drill
from audit.choices import Channel
from governance.models import System
from tests.browser import SCREEN, Journey
from tests.factories import propose_raise as propose

pytestmark = [pytest.mark.slow, pytest.mark.browser]

MAX_CLICKS = 5
FROM_HOME_MAX_CLICKS = 4  # find crm 4471, today, export (and one to spare)


def test_the_auditor_finds_what_happened_to_account_4471_today_in_a_few_clicks(live, sign_in):
    small = propose(live, "2400.00", "approved")  # impact 400 USD: auto-approved, executed by the worker
    live.wait_for(small, "executed")
    propose(live, "5000.00", "pending_approval")  # impact 2,600 USD: waits for Dana
    other = live.agent().post(
        "/api/v1/proposals",
        json={
            "system": "crm",
            "action": "update_credit_limit",
            "record_id": "4472",
            "payload": {"credit_limit": "1600.00"},
        },
    )
    assert other.status_code == 201, other.text

    page = sign_in("auditor")
    clicks = 0

    def click(locator) -> None:
        nonlocal clicks
        clicks += 1
        locator.click()

    page.goto(f"{live.stack.web_url}/admin/")
    click(page.get_by_role("link", name="Audit events"))
    click(page.locator("#changelist-filter").get_by_role("link", name="Today"))
    page.fill("#searchbar", "4471")
    clicks += 1  # pressing Enter in the search box counts as a click
    page.press("#searchbar", "Enter")
    page.wait_for_url(lambda url: "q=4471" in url)
    rows = page.locator("#result_list tbody tr")
    assert rows.count() >= 4 and all("4471" in text for text in rows.all_inner_texts())
    click(page.locator("a.timeline-link").first)
    page.wait_for_selector("#timeline")

    assert clicks <= MAX_CLICKS
    lines = page.locator("#timeline .what").all_inner_texts()
    assert len(lines) == 2, lines
    assert lines[0].startswith(
        "collections-agent raised the credit limit of account 4471 from 2,000.00 to 2,400.00 USD "
        "(reason: “Paid on time for 12 months”) — auto-approved by rule at "
    ), lines[0]
    assert "executed" in lines[0]
    assert lines[1].startswith(
        "collections-agent proposed to raise the credit limit of account 4471 from 2,400.00 to 5,000.00 USD"
    ), lines[1]
    assert lines[1].endswith("not executed yet")
    assert "4472" not in page.locator("#timeline").inner_text()
    if os.environ.get("GATEHOUSE_SCREENSHOTS"):  # for a person to look at: what the auditor sees
        page.screenshot(path=os.path.join(os.environ["GATEHOUSE_SCREENSHOTS"], "timeline.png"), full_page=True)

    # From the timeline to the proposal, and from the proposal back to its audit trail.
    page.locator("#timeline a.proposal-link").last.click()
    page.wait_for_selector("#proposal-audit-trail")
    page.click("#proposal-audit-trail")
    page.wait_for_selector("#result_list")
    assert "proposed update_credit_limit on account 4471" in page.locator("#result_list").inner_text()


def test_from_home_the_auditor_finds_crm_4471_reads_today_in_order_and_exports_it(live, sign_in):
    """Find a record on the home page → the timeline of today, in the order things happened → Export; the file holds
    crm 4471's events and none of crm-staging 4471's (a rollback drill's record: the same id, another record)."""
    assert rollback_drill(system=System.objects.get(slug="crm"), channel=Channel.COMMAND).passed
    executed = propose(live, "2400.00", "approved")  # impact 400 USD: auto-approved, executed by the worker
    live.wait_for(executed, "executed")
    waiting = propose(live, "5000.00", "pending_approval")  # impact 2,600 USD: waits for Dana

    page = sign_in("auditor", viewport=SCREEN)
    journey = Journey(page)
    page.select_option("#id_system", "crm")
    page.fill("#id_record", "4471")
    journey.click("#find-record-submit")
    journey.click("#today")

    today = timezone.localdate().isoformat()
    assert page.locator("h1").inner_text() == f"Timeline of crm 4471 on {timezone.localdate():%A} {today}"
    whens = page.locator("#timeline td.when").all_inner_texts()
    lines = page.locator("#timeline td.what").all_inner_texts()
    assert len(lines) == 2, lines
    assert whens == sorted(whens) and all(when.startswith(today) and when.endswith(" UTC") for when in whens)
    assert lines[0].startswith("collections-agent raised the credit limit of account 4471 from 2,000.00 to 2,400.00")
    assert "executed" in lines[0]
    assert lines[1].startswith("collections-agent proposed to raise the credit limit of account 4471 from 2,400.00")
    assert lines[1].endswith("not executed yet")
    refs = page.locator("#timeline a.proposal-link").all_inner_texts()
    assert refs == [f"proposal {executed[:8]}", f"proposal {waiting[:8]}"]  # each line linked to its proposal
    assert "crm-staging" in page.locator("#timeline-elsewhere").inner_text()
    assert "drill" not in page.locator("#timeline").inner_text().lower()
    journey.screenshot("auditor")

    with page.expect_download() as download_info:
        journey.click("#export-timeline")
    download = download_info.value
    print(f"auditor: home → crm 4471 today → export in {journey.clicks} clicks; pages: {journey.visited}")
    assert journey.clicks <= FROM_HOME_MAX_CLICKS

    assert download.suggested_filename == f"crm-4471-{today}.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8-sig"))))
    assert rows and {(row["system"], row["record_id"]) for row in rows} == {("crm", "4471")}
    assert {row["proposal_id"] for row in rows} == {executed, waiting}
    assert [row["verb"] for row in rows if row["proposal_id"] == executed] == [
        "proposed",
        "auto_approved",
        "executing",
        "executed",
    ]
    assert [row["occurred_at"] for row in rows] == sorted(row["occurred_at"] for row in rows)

    # The events behind the timeline: the summary reads on the screen, not cut off at its right edge.
    journey.click("#raw-events")
    inner, visible = page.evaluate(
        "(() => { const r = document.querySelector('.results'); return [r.scrollWidth, r.clientWidth] })()"
    )
    assert inner <= visible, f"the event list is {inner} px wide in a {visible} px box"
    assert page.locator("#result_list td.field-summary_text").first.is_visible()
    assert "crm 4471" in page.locator("#record-systems").inner_text()
