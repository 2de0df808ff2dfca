"""The approver on a phone (390 × 844) in a real browser, moving only by clicks: the $3,000 raise decided from the home
page (home → the sentence → Approve) with nothing scrolling sideways and the buttons big enough for a thumb and inside
the screen once scrolled to; the queue as cards; the own page's "I'm away" handing the proposal to a delegate, who
finds it under "Delegated to me", approves it, and finds it under "Decided by me this week"."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from governance.choices import Role
from tests.browser import PHONE, Journey
from tests.factories import UserFactory, post_proposal, propose_raise

pytestmark = [pytest.mark.slow, pytest.mark.browser]

RAISE = "Raise the credit limit of account 4471 from 2,000.00 to 5,000.00"
OTHER = "Raise the credit limit of account 4472 from 1,500.00 to 2,500.00"
MAX_CLICKS = 2  # home → the sentence → Approve
THUMB = 44  # px: the smallest target a thumb hits reliably (Apple's and Google's guidelines: 44 pt, 48 dp)


def within_the_screen(page, locator) -> dict:
    """Scroll `locator` into view as a person would, then: wholly inside the 390 × 844 screen, not covered by anything
    else, and no narrower or shorter than a thumb. Returns its box."""
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], box
    assert box["width"] >= THUMB and box["height"] >= THUMB, box
    on_top = page.evaluate(
        "([x, y]) => document.elementFromPoint(x, y).closest('button, a, textarea, input, select')?.id || ''",
        [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
    )
    assert on_top == locator.get_attribute("id")
    return box


def label_of(page, selector: str) -> str:
    """What a phone shows above a value: the heading the cell carries (CSS `::before`, from its data-label)."""
    return page.evaluate(
        "(selector) => getComputedStyle(document.querySelector(selector), '::before').content", selector
    ).strip('"')


def test_the_approver_decides_the_3000_dollar_raise_on_a_phone_from_the_home_page_in_two_clicks(live, sign_in):
    proposal_id = propose_raise(live, "5000.00")
    response = post_proposal(live.agent(), "update_credit_limit", {"credit_limit": "2500.00"}, record="4472")
    assert response.status_code == 201  # a second one, still waiting at the end: the queue shows it as a card
    page = sign_in("approver", viewport=PHONE)
    journey = Journey(page)  # the home page fits the phone

    card = page.locator("#dash-queue tr.dash-proposal", has_text="4471")
    assert "3,000.00 USD" in card.inner_text() and "due in" in card.inner_text()
    sentence_box = card.locator("td.dash-what").bounding_box()  # a card: the sentence across the screen, not a column
    assert sentence_box is not None and sentence_box["width"] >= 0.8 * PHONE["width"] - 60, sentence_box
    journey.click(page.locator("#dash-queue").get_by_role("link", name=RAISE, exact=True))  # home → the decision

    assert page.locator("h1").inner_text() == RAISE
    assert re.search(r"\(\d+ h \d+ min left\)", page.locator("#proposal-status").locator("..").inner_text())
    assert "3,000.00 USD" in page.locator("#impact").inner_text()
    values = {column: page.locator(f"#diff tbody td.{column}").inner_text() for column in ("then", "live", "proposed")}
    assert values == {"then": "2,000.00", "live": "2,000.00", "proposed": "5,000.00"}
    assert re.fullmatch(r"When proposed, \d{4}-\d\d-\d\d \d\d:\d\d UTC", label_of(page, "#diff tbody td.then"))
    assert re.fullmatch(r"In Sample CRM now, read at \d\d:\d\d UTC", label_of(page, "#diff tbody td.live"))
    assert label_of(page, "#diff tbody td.proposed") == "Proposed"
    for cell in page.locator("#diff tbody td").all():  # one under another, each the screen's width at most
        box = cell.bounding_box()
        assert box is not None and box["x"] + box["width"] <= PHONE["width"]
    page.evaluate("window.scrollTo(0, document.querySelector('h1').getBoundingClientRect().top + window.scrollY - 8)")
    journey.screenshot("approver-phone")

    reason = page.locator("#id_reason")
    reason.scroll_into_view_if_needed()
    reason_box = reason.bounding_box()
    assert reason_box is not None and reason_box["x"] + reason_box["width"] <= PHONE["width"]
    reject = within_the_screen(page, page.locator("#reject-button"))
    approve = within_the_screen(page, page.locator("#approve-button"))
    assert approve["x"] + approve["width"] <= reject["x"] - 8 or reject["x"] + reject["width"] <= approve["x"] - 8
    journey.click("#approve-button")

    decided = journey.clicks
    path = " → ".join(url.removeprefix(live.stack.web_url).split("?")[0] for url in journey.visited)
    print(f"\napprover on a phone: the $3,000 raise decided in {decided} clicks after sign-in: {path}")
    assert decided <= MAX_CLICKS
    assert "Approved." in page.locator(".messagelist").inner_text()
    live.wait_for(proposal_id, "executed")
    assert live.crm_account("4471")["credit_limit"] == "5000.00"

    # The queue on the phone: the other raise as a card, the sentence first, each figure under its name.
    journey.click(page.locator(".breadcrumbs a", has_text="Proposals"))
    assert page.locator("h1").inner_text() == "Waiting for you"
    row = page.locator("#result_list tbody tr", has_text="4472")
    assert row.count() == 1 and page.locator("#result_list tbody tr").count() == 1
    link = row.get_by_role("link", name=OTHER, exact=True)
    box = link.bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"]
    assert row.locator("td.field-impact").inner_text() == "1,000.00 USD"
    assert label_of(page, "#result_list tbody td.field-impact") == "Impact"
    assert label_of(page, "#result_list tbody td.field-sla_left") == "Time left"
    assert re.fullmatch(r"\d+ h \d+ min", row.locator("td.field-sla_left").inner_text())
    row_box = row.bounding_box()
    assert row_box is not None and row_box["height"] < PHONE["height"] / 3  # a card, not a column a word wide
    print(f"approver on a phone: {journey.clicks} clicks in all, every page within {PHONE['width']} px")


def test_on_a_phone_the_approver_hands_her_decisions_to_a_deputy_who_decides_them_and_sees_what_he_decided(
    live, sign_in
):
    UserFactory(username="deputy", first_name="Dev", last_name="Deputy", roles=[Role.APPROVERS])
    proposal_id = propose_raise(live, "5000.00")

    page = sign_in("approver", viewport=PHONE)
    journey = Journey(page)
    journey.click("#dash-mine")  # home → her own page
    assert page.locator("h1").inner_text() == "Your approvals"
    assert page.locator("#mine-waiting").get_by_role("link", name=RAISE, exact=True).count() == 1
    until = (timezone.localtime() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    page.select_option("#id_delegate", label="Dev Deputy (deputy)")
    page.fill("#id_ends_at", until)
    page.fill("#id_reason", "On holiday")
    within_the_screen(page, page.locator("#away-button"))
    journey.click("#away-button")
    assert "deputy decides what is named to you" in page.locator(".messagelist").inner_text()
    assert "Dev Deputy (deputy)" in page.locator("#away-current").inner_text()
    print(f"\napprover on a phone: away, with a deputy, in {journey.clicks} clicks after sign-in")

    deputy = sign_in("deputy", viewport=PHONE)
    theirs = Journey(deputy)
    theirs.click("#dash-mine")
    assert deputy.locator("#mine-waiting .mine-sentence").count() == 0
    delegated = deputy.locator("#mine-delegated")
    assert "You stand in for approver (delegation)" in delegated.inner_text()
    assert "Dana Approver (approver)" in deputy.locator("#standing-in").inner_text()
    theirs.click(delegated.get_by_role("link", name=RAISE, exact=True))  # → the decision page
    within_the_screen(deputy, deputy.locator("#approve-button"))
    theirs.click("#approve-button")
    assert "Approved." in deputy.locator(".messagelist").inner_text()
    live.wait_for(proposal_id, "executed")
    assert live.crm_account("4471")["credit_limit"] == "5000.00"

    theirs.click(deputy.locator(".breadcrumbs a", has_text="Home"))
    theirs.click("#dash-mine")
    decided = deputy.locator("#mine-decided")
    assert decided.get_by_role("link", name=RAISE, exact=True).count() == 1
    assert "You approved it; now executed" in decided.inner_text()
    assert deputy.locator("#mine-delegated .mine-sentence").count() == 0
    print(f"deputy on a phone: found it under Delegated to me, approved it, saw it decided: {theirs.clicks} clicks")

    # Back: the approver ends it on her page, and nothing of hers was decided by her this week.
    journey.click(page.get_by_role("button", name="I'm back: end it now"))
    assert "no longer decides for you" in page.locator(".messagelist").inner_text()
    assert page.locator("#away-current").count() == 0
    assert page.locator("#mine-decided .mine-sentence").count() == 0
