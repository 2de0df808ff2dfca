"""Separation of duties from two browser sessions of the same person (the services' own checks are in
tests/approvals/test_workflow.py): a second session is still the same person, and the agent's owner is not an
approver of its proposals however the request is made."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from audit.models import AuditEvent
from governance.choices import Role
from tests.factories import propose_raise

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SUBMIT = """([url, fields]) => {
    const form = document.createElement("form");
    form.method = "post";
    form.action = url;
    fields.csrfmiddlewaretoken = document.querySelector("input[name=csrfmiddlewaretoken]").value;
    for (const [name, value] of Object.entries(fields)) {
        const input = document.createElement("input");
        input.type = "hidden"; input.name = name; input.value = value;
        form.appendChild(input);
    }
    document.body.appendChild(form);
    form.submit();
}"""


def crafted_post(live, page, proposal_id: str, **fields: str) -> str:
    """What a person could send without the button: a POST of the decide form with the session's CSRF token."""
    page.goto(f"{live.stack.web_url}{reverse('admin:approvals_proposal_change', args=[proposal_id])}")
    page.evaluate(SUBMIT, [reverse("admin:approvals_decide", args=[proposal_id]), fields])
    page.wait_for_selector(".messagelist")
    return page.locator(".messagelist").inner_text()


def test_the_approver_in_a_second_session_cannot_give_the_second_review(live, sign_in):
    User.objects.get(username="approver").groups.add(Group.objects.get(name=Role.REVIEWERS))
    proposal_id = propose_raise(live, "8000.00")  # the dual band: one approver, then a second reviewer
    first = sign_in("approver")
    first.goto(f"{live.stack.web_url}{reverse('admin:approvals_proposal_change', args=[proposal_id])}")
    first.click("#approve-button")
    first.wait_for_selector(".messagelist .success")
    proposal = live.wait_for(proposal_id, "executed")
    assert proposal.awaiting_review

    second = sign_in("approver")  # another browser context: its own cookies, its own session
    second.goto(f"{live.stack.web_url}{reverse('admin:approvals_proposal_change', args=[proposal_id])}")
    assert second.locator("#review-form").count() == 0
    message = crafted_post(live, second, proposal_id, step="review", reason="looks fine")
    assert "you approved it: the second reviewer must be someone else" in message

    proposal.refresh_from_db()
    assert proposal.awaiting_review
    refusal = AuditEvent.objects.filter(proposal_id=proposal.pk, verb="denied").latest("id")
    assert refusal.actor == "approver"


def test_the_agents_owner_cannot_approve_its_proposal_from_the_browser(live, sign_in):
    proposal_id = propose_raise(live, "5000.00")
    owner = sign_in("owner")
    owner.goto(f"{live.stack.web_url}{reverse('admin:approvals_proposal_change', args=[proposal_id])}")
    assert owner.locator("#decide-form").count() == 0
    message = crafted_post(live, owner, proposal_id, step="approve", reason="")
    assert "You may not approve this proposal" in message
    assert live.wait_for(proposal_id, "pending_approval").status == "pending_approval"
    assert AuditEvent.objects.filter(proposal_id=proposal_id, verb="denied", actor="owner").exists()
