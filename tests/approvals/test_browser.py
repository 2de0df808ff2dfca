"""The approver's day in a real browser on a 1366 × 768 screen, moving only by clicks from the admin's home: the queue,
the decision page with each value labelled by where and when it was read, approve, the write in the CRM and the page
that shows it afterwards; a record that moved in the CRM after the proposal, said in words; a rejection's reason."""

import re

import pytest

from tests.browser import SCREEN, Journey
from tests.factories import propose_raise

pytestmark = [pytest.mark.slow, pytest.mark.browser]

RAISE = "Raise the credit limit of account 4471 from 2,000.00 to 5,000.00"
MAX_CLICKS = 3  # home → the queue → the sentence → Approve
DAY_CLOCK = r"\d{4}-\d\d-\d\d \d\d:\d\d utc"
LIVE = r"in sample crm now, read at \d\d:\d\d utc"


def heading(page, column: str) -> str:
    """A column heading of the decision page's table, as shown (the admin's CSS capitalises it), in lower case."""
    return page.locator(f"#diff thead th.{column}").inner_text().strip().casefold()


def value(page, column: str) -> str:
    return page.locator(f"#diff tbody td.{column}").inner_text().strip()


def set_limit(live, limit: str) -> None:
    """Someone in the CRM, changing account 4471 by hand (not through Gatehouse)."""
    live.crm_control("/_control/set", {"account": "4471", "fields": {"credit_limit": limit}})


def test_the_approver_decides_the_3000_dollar_raise_from_the_queue_in_three_clicks_and_sees_what_was_written(
    live, sign_in
):
    proposal_id = propose_raise(live, "5000.00")
    page = sign_in("approver", viewport=SCREEN)
    journey = Journey(page)

    journey.click(page.locator("#dash-queue .dash-more a"))  # home → the queue
    assert page.locator("h1").inner_text() == "Waiting for you"
    headings = [text.strip().casefold() for text in page.locator("#result_list thead th").all_inner_texts()]
    assert headings[1:] == ["agent", "proposal", "impact", "time left", "band", "status"]
    row = page.locator("#result_list tbody tr", has_text="4471")
    assert row.count() == 1
    assert row.locator("td.field-impact").inner_text() == "3,000.00 USD"

    journey.click(row.get_by_role("link", name=RAISE, exact=True))  # the sentence → the decision page
    assert page.locator("h1").inner_text() == RAISE
    assert re.fullmatch(rf"when proposed, {DAY_CLOCK}", heading(page, "then"))
    assert re.fullmatch(LIVE, heading(page, "live"))
    assert (value(page, "then"), value(page, "live"), value(page, "proposed")) == ("2,000.00", "2,000.00", "5,000.00")
    assert re.match(
        rf"Impact, computed by Gatehouse when proposed \({DAY_CLOCK}\): 3,000\.00 USD",
        page.locator("#impact").inner_text(),
        re.I,
    )
    assert page.locator("#record-moved").count() == 0
    assert "Paid on time for 12 months" in page.content()
    journey.screenshot("approver")

    journey.click("#approve-button")
    decided = journey.clicks
    path = " → ".join(url.removeprefix(live.stack.web_url).split("?")[0] for url in journey.visited)
    print(f"\napprover: the $3,000 raise decided in {decided} clicks after sign-in: {path}")
    assert decided <= MAX_CLICKS
    assert "Approved." in page.locator(".messagelist").inner_text()
    live.wait_for(proposal_id, "executed")
    assert live.crm_account("4471")["credit_limit"] == "5000.00"

    # Afterwards, through the queue's "All proposals": what was written, and the CRM's value now, labelled as live.
    journey.click(page.locator(".breadcrumbs a", has_text="Proposals"))
    assert page.locator("h1").inner_text() == "Waiting for you" and page.locator("#result_list").count() == 0
    journey.click(page.locator("#changelist-filter a", has_text="All proposals"))
    assert page.locator("h1").inner_text() == "All proposals"
    journey.click(page.locator("#result_list").get_by_role("link", name=RAISE, exact=True))
    assert page.locator("#proposal-status").inner_text() == "Executed"
    assert page.locator("#decision h3", has_text="What was written").count() == 1
    assert heading(page, "before") == "before the write"
    assert re.fullmatch(rf"written, {DAY_CLOCK}", heading(page, "written"))
    assert re.fullmatch(LIVE, heading(page, "live"))
    assert (value(page, "before"), value(page, "written"), value(page, "live")) == ("2,000.00", "5,000.00", "5,000.00")
    assert page.locator("#live-differs").count() == 0  # the CRM holds what was written
    print(f"approver: {journey.clicks} clicks in all, every page within {SCREEN['width']} px")


def test_a_record_that_moved_in_the_crm_after_the_proposal_is_said_in_words_before_anyone_approves_it(live, sign_in):
    set_limit(live, "2300.00")
    proposal_id = propose_raise(live, "5000.00")  # a 2,700.00 raise, computed on 2,300.00
    set_limit(live, "2600.00")  # meanwhile, someone in the CRM
    page = sign_in("approver", viewport=SCREEN)
    journey = Journey(page)

    sentence = "Raise the credit limit of account 4471 from 2,300.00 to 5,000.00"
    journey.click(page.locator("#dash-queue").get_by_role("link", name=sentence, exact=True))  # home → the decision
    moved = page.locator("#record-moved").inner_text()
    assert (
        "The record changed since the agent proposed this: the impact was computed on 2,300.00; it is 2,600.00 now."
        in moved
    )
    assert page.locator("#new-impact").inner_text() == "2,400.00 USD"
    assert "3,000.00" not in moved and "Approving first decides it again on these figures" in moved
    assert (
        "when proposed" in page.locator("#impact").inner_text()
        and "2,700.00 USD" in page.locator("#impact").inner_text()
    )
    assert heading(page, "then").startswith("when proposed,") and re.fullmatch(LIVE, heading(page, "live"))
    assert (value(page, "then"), value(page, "live")) == ("2,300.00", "2,600.00")

    journey.click("#approve-button")  # approvals/freshness.py decides it again; this approval does not count
    assert "Not approved yet" in page.locator(".messagelist").inner_text()
    assert page.locator("#proposal-status").inner_text() == "Pending approval"
    assert live.crm_account("4471")["credit_limit"] == "2600.00"
    assert "Decided again: the record changed after it was proposed" in page.locator("#stale-changes").inner_text()
    impact = page.locator("#impact").inner_text()
    assert "when decided again" in impact and "2,400.00 USD" in impact
    assert heading(page, "then").startswith("when decided again,")
    assert (value(page, "then"), value(page, "live")) == ("2,600.00", "2,600.00")
    assert page.locator("#record-moved").count() == 0

    journey.click("#approve-button")  # what they now see: it counts
    live.wait_for(proposal_id, "executed")
    assert live.crm_account("4471")["credit_limit"] == "5000.00"
    print(f"\napprover: a moved record seen, decided again and approved in {journey.clicks} clicks")


def test_a_rejection_needs_a_reason_and_the_agent_sees_it(live, sign_in):
    proposal_id = propose_raise(live, "4000.00")
    page = sign_in("approver", viewport=SCREEN)
    journey = Journey(page)
    sentence = "Raise the credit limit of account 4471 from 2,000.00 to 4,000.00"
    journey.click(page.locator("#dash-queue").get_by_role("link", name=sentence, exact=True))
    journey.click("#reject-button")
    assert "Give a reason to reject" in page.locator(".messagelist").inner_text()
    page.fill("#id_reason", "Two invoices are still overdue.")
    journey.click("#reject-button")
    page.wait_for_selector(".messagelist .success")
    body = live.agent().get(f"/api/v1/proposals/{proposal_id}").json()
    assert body["status"] == "rejected"
    assert body["rejection_reason"] == "Two invoices are still overdue."
    assert live.crm_account("4471")["credit_limit"] == "2000.00"
