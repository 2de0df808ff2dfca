"""Each demo role signs in to the running stack in a real browser and finds its own work on the admin home page."""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from approvals.decisions import proposal_approve
from approvals.killswitch import SwitchTarget, kill_switch_on
from approvals.services import ProposalRequest, proposal_create
from audit.choices import Channel
from connectors.models import Credential
from connectors.services import credential_set
from console.dashboard import SECTION_ROLES
from governance.models import Agent, System, ThresholdBand

pytestmark = [pytest.mark.slow, pytest.mark.browser]

User = get_user_model()


def raise_4471_to(limit: str):
    """collections-agent proposes a new credit limit for account 4471 (2,000.00 in the CRM), read live."""
    proposal, _ = proposal_create(
        agent=Agent.objects.get(slug="collections-agent"),
        request=ProposalRequest(
            system="crm",
            action="update_credit_limit",
            record_id="4471",
            payload={"credit_limit": limit},
            reason="Paid on time for 12 months",
        ),
        channel=Channel.API,
    )
    return proposal


def home(live, sign_in, username: str):
    page = sign_in(username)
    page.goto(f"{live.stack.web_url}/admin/")
    page.wait_for_selector("#dashboard")
    return page


def screenshot(page, role: str) -> None:
    if os.environ.get("GATEHOUSE_SCREENSHOTS"):  # for a person to look at: each role's home page
        page.screenshot(path=os.path.join(os.environ["GATEHOUSE_SCREENSHOTS"], f"dash_{role}.png"), full_page=True)


def test_the_approver_finds_the_3000_dollar_raise_with_its_sla_clock_and_decides_from_there(live, sign_in):
    proposal = raise_4471_to("5000.00")
    assert proposal.status == "pending_approval" and proposal.impact_amount == 3000

    page = home(live, sign_in, "approver")
    queue = page.locator("#dash-queue")
    assert "Awaiting your decision" in queue.locator("h2").inner_text()
    row = queue.locator("tr.dash-proposal", has_text="4471")
    assert row.count() == 1
    text = row.inner_text()
    assert "Raise the credit limit of account 4471 from 2,000.00 to 5,000.00" in text and "3,000.00 USD" in text
    assert re.search(r"due in (3 h 5\d min|4 h 0 min)", text), text
    assert page.locator("#dash-switches").count() == 0 and page.locator("#dash-audit").count() == 0
    screenshot(page, "approver")

    row.get_by_role("link", name="Decide").click()
    page.wait_for_selector("#approve-button")
    assert "2,000.00" in page.locator("#diff").inner_text()


def test_the_reviewer_finds_the_review_queue_with_nothing_to_review(live, sign_in):
    raise_4471_to("5000.00")  # a one-approver proposal: nothing for the second reviewer

    page = home(live, sign_in, "reviewer")
    reviews = page.locator("#dash-reviews")
    assert "Awaiting your review" in reviews.inner_text()
    assert "Nothing to review" in reviews.inner_text()
    assert page.locator("#dash-queue").count() == 0 and page.locator("#dash-charts").count() == 0
    screenshot(page, "reviewer")


def test_the_owner_finds_readiness_credentials_due_and_a_rule_to_sign_off_again(live, sign_in):
    # As in the demo, the collections agent has an account of its own at the CRM (the session's CRM has only the
    # shared one, which no call here uses).
    crm = System.objects.get(slug="crm")
    agent = Agent.objects.get(slug="collections-agent")
    credential_set(system=crm, agent=agent, secret="its-own-" + "x" * 16, actor=None, channel="command")
    credential = Credential.objects.get(system__slug="crm")
    credential.last_rotated_at = timezone.now() - timedelta(days=85)  # a 90-day interval: due in 5 days
    credential.save()
    band = ThresholdBand.objects.get(rule__name="Credit limit changes on crm", min_amount=500)
    band.sla = timedelta(hours=8)
    band.save()  # the edit voids the owner's sign-off

    page = home(live, sign_in, "owner")
    readiness = page.locator("#dash-readiness")
    collections = readiness.locator("tr", has_text="collections-agent")
    assert "✗" in collections.inner_text() and "A rollback drill passed recently" in collections.inner_text()
    assert "✓" in readiness.locator("tr", has_text="reporting-agent").inner_text()
    credentials = page.locator("#dash-credentials tr.dash-credential")
    assert credentials.count() == 1 and re.search(r"crm\s+due in (5 d 0 h|4 d 23 h)", credentials.inner_text())
    rules = page.locator("#dash-rules")
    assert "Credit limit changes on crm" in rules.inner_text() and "void" in rules.inner_text()
    assert page.locator("#dash-queue").count() == 0 and page.locator("#dash-switches").count() == 0
    screenshot(page, "owner")

    collections.get_by_role("link", name="Fix it").click()
    page.wait_for_url(re.compile(r"/admin/approvals/drill/"))


def test_the_auditor_finds_the_recent_denial_and_the_way_into_the_audit_trail(live, sign_in):
    refused = live.agent("reporting-agent").post(
        "/api/v1/proposals",
        json={"system": "crm", "action": "set_status", "record_id": "4471", "payload": {"status": "closed"}},
    )
    assert refused.status_code == 403, refused.text

    page = home(live, sign_in, "auditor")
    audit = page.locator("#dash-audit")
    recent = audit.locator("#dash-audit-recent tr", has_text="reporting-agent")
    assert recent.count() == 1 and "denied" in recent.inner_text()
    assert "1\ndenied" in audit.locator("#dash-audit-counts").inner_text()
    assert page.locator("#dash-queue").count() == 0 and page.locator("#dash-readiness").count() == 0
    screenshot(page, "auditor")

    audit.get_by_role("link", name="denied").click()
    page.wait_for_selector("#result_list")
    assert "reporting-agent" in page.locator("#result_list").inner_text()


def test_the_operator_finds_the_kill_switch_state_and_the_failed_execution(live, sign_in):
    operator = User.objects.get(username="operator")
    kill_switch_on(
        target=SwitchTarget(agent=Agent.objects.get(slug="reporting-agent")),
        reason="Reads too much at night",
        user=operator,
        channel=Channel.ADMIN,
    )
    proposal = raise_4471_to("5000.00")
    live.crm_control("/_control/token", {"tokens": ["revoked-upstream"]})  # the CRM answers 401: a permanent failure
    try:
        proposal_approve(proposal_id=proposal.pk, user=User.objects.get(username="approver"), channel=Channel.ADMIN)
        live.wait_for(proposal.pk, "failed")
    finally:
        live.crm_control("/_control/token", {"tokens": [live.stack.crm_token]})

    page = home(live, sign_in, "operator")
    switches = page.locator("#dash-switches")
    assert "off" in switches.locator("#dash-global-switch").inner_text()
    disabled = switches.locator("#dash-disabled-agents")
    assert "reporting-agent" in disabled.inner_text() and "Reads too much at night" in disabled.inner_text()
    failure = page.locator("#dash-failures tr.dash-failure", has_text="4471")
    assert failure.count() == 1 and "401" in failure.inner_text()
    assert "1 failure" in page.locator("#dash-per-day-totals").inner_text()
    assert page.locator("#dash-availability").count() == 1 and page.locator("#dash-readiness").count() == 1
    screenshot(page, "operator")

    disabled.get_by_role("link", name="reporting-agent").click()
    page.wait_for_selector("#switch-state")
    assert "ON" in page.locator("#switch-state").inner_text()


def test_the_superuser_finds_every_section(live, sign_in):
    raise_4471_to("5000.00")

    page = home(live, sign_in, "admin")
    for section in SECTION_ROLES:
        assert page.locator(f"#dash-{section}").count() == 1, section
    assert "Nothing awaits your decision" in page.locator("#dash-queue").inner_text()  # Dana is the named approver
    assert "1" in page.locator("#dash-bands-title").inner_text()
    screenshot(page, "admin")
