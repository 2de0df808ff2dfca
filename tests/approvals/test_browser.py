"""The approver's day in a real browser: the queue, the proposal page with its diff, approve, reject."""

import os

import pytest

from tests.factories import propose_raise

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_the_approver_approves_the_3000_dollar_raise_and_the_crm_shows_the_new_limit(live, sign_in):
    proposal_id = propose_raise(live, "5000.00")
    page = sign_in("approver")
    page.goto(f"{live.stack.web_url}/admin/approvals/proposal/")
    row = page.locator("#result_list tbody tr", has_text="4471")
    assert row.count() == 1
    assert "update_credit_limit" in row.inner_text()
    row.locator("a").first.click()
    diff = page.locator("#diff")
    assert "2,000.00" in diff.inner_text() and "5,000.00" in diff.inner_text()
    assert "Paid on time for 12 months" in page.content()
    if os.environ.get("GATEHOUSE_SCREENSHOTS"):  # for a person to look at: what the approver sees
        page.screenshot(path=os.path.join(os.environ["GATEHOUSE_SCREENSHOTS"], "proposal.png"), full_page=True)
    page.click("#approve-button")
    page.wait_for_selector(".messagelist")
    live.wait_for(proposal_id, "executed")
    assert live.crm_account("4471")["credit_limit"] == "5000.00"


def test_a_rejection_needs_a_reason_and_the_agent_sees_it(live, sign_in):
    proposal_id = propose_raise(live, "4000.00")
    page = sign_in("approver")
    page.goto(f"{live.stack.web_url}/admin/approvals/proposal/{proposal_id}/change/")
    page.click("#reject-button")
    assert "Give a reason to reject" in page.locator(".messagelist").inner_text()
    page.fill("#id_reason", "Two invoices are still overdue.")
    page.click("#reject-button")
    page.wait_for_selector(".messagelist .success")
    body = live.agent().get(f"/api/v1/proposals/{proposal_id}").json()
    assert body["status"] == "rejected"
    assert body["rejection_reason"] == "Two invoices are still overdue."
    assert live.crm_account("4471")["credit_limit"] == "2000.00"
