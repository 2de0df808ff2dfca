"""The CFO's question in a real browser: "what did the agent do with account 4471 today?" — a few clicks, no SQL."""

import os

import pytest

from tests.factories import propose_raise as propose

pytestmark = [pytest.mark.slow, pytest.mark.browser]

MAX_CLICKS = 5


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
