"""Reviews that bite (issue 17, item 3): the second review before execution by default, an overdue review escalated
once then reminded and never dropped, a flag after execution that plans the reversal of that one write and waits for
its approver, and one write reversed from its page or by `reverse_writes --proposal`.

Against the sample CRM (a real process), and with the stack's Celery worker where the reversal runs."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core import mail
from django.core.management import CommandError, call_command
from django.utils import timezone

from approvals.choices import ProposalStatus
from approvals.decisions import proposal_approve, proposal_review, proposals_escalate_and_expire
from approvals.models import Proposal, Reversal, ReversalStep
from approvals.reversal import ReversalRefused, reversal_start
from approvals.reversal_single import (
    NotYourReversal,
    flagged_reversal_plan,
    proposal_reversal_approve,
    proposal_reverse,
)
from approvals.tasks import escalate_and_expire
from audit.models import AuditEvent
from governance.choices import ReviewTiming
from governance.models import System, ThresholdBand
from governance.services import threshold_rule_sign_off
from sandbox.testing import crm_control
from tests.factories import propose_limit, record_execution

User = get_user_model()
CHANGELIST = "/admin/approvals/proposal/"


def user(username: str):
    return User.objects.get(username=username)


def executed_dual(limit: str = "8000.00") -> Proposal:
    """A dual proposal of the demo (review after execution), approved and executed: recorded as the worker would,
    with the sample CRM set to what the write wrote."""
    proposal = propose_limit(limit)
    assert proposal.mode == "dual" and proposal.review_timing == "after"
    proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    crm_control(
        System.objects.get(slug="crm").connector_config["base_url"],
        "/_control/set",
        {"account": "4471", "fields": {"credit_limit": limit}},
    )
    return record_execution(proposal)


def verbs(proposal: Proposal) -> list[tuple[str, str]]:
    events = AuditEvent.objects.filter(proposal_id=proposal.pk).order_by("id")
    return [(event.verb, event.outcome) for event in events]


# --- Before execution is the default for new bands -------------------------------------------------------------


@pytest.mark.django_db
def test_a_new_band_reviews_before_execution_while_the_demos_dual_band_keeps_after(demo):
    assert ThresholdBand().review_timing == ReviewTiming.BEFORE_EXECUTION
    demo_dual = ThresholdBand.objects.get(rule__name="Credit limit changes on crm", mode="dual")
    assert demo_dual.review_timing == ReviewTiming.AFTER_EXECUTION


@pytest.mark.django_db
def test_the_admins_new_band_row_offers_review_before_execution(demo, client):
    client.force_login(user("admin"))
    page = client.get("/admin/governance/thresholdrule/add/")
    assert page.status_code == 200
    assert '<option value="before" selected>' in page.content.decode()


# --- An overdue review escalates once, is reminded, stays due ---------------------------------------------------


def test_an_overdue_review_after_execution_escalates_once_emails_reviewers_and_on_call_and_stays_due(
    crm_demo, client, agent_client, django_capture_on_commit_callbacks
):
    proposal = executed_dual()
    assert proposals_escalate_and_expire() == (0, 0)  # not due yet
    Proposal.objects.filter(pk=proposal.pk).update(review_due_at=timezone.now() - timedelta(minutes=1))
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        assert proposals_escalate_and_expire() == (1, 0)
    overdue = Proposal.objects.get(pk=proposal.pk)
    assert overdue.status == ProposalStatus.EXECUTED and overdue.review_escalated_at is not None
    event = AuditEvent.objects.filter(proposal_id=proposal.pk).latest("id")
    assert (event.verb, event.outcome, event.input) == ("escalated", "review overdue", {"reason": "review overdue"})
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [
        "crm-oncall@gatehouse.example",
        "operator@gatehouse.example",
        "reviewer@gatehouse.example",
    ]
    assert "second review overdue" in mail.outbox[0].subject

    with django_capture_on_commit_callbacks(execute=True):  # escalated once, not every sweep
        assert proposals_escalate_and_expire() == (0, 0)
    assert len(mail.outbox) == 1 and AuditEvent.objects.filter(proposal_id=proposal.pk).latest("id") == event

    # A day later, still not reviewed: a reminder to the same people, and no new event (nothing changed).
    Proposal.objects.filter(pk=proposal.pk).update(review_reminded_at=timezone.now() - timedelta(hours=25))
    with django_capture_on_commit_callbacks(execute=True):
        assert proposals_escalate_and_expire() == (0, 0)
    assert len(mail.outbox) == 2 and mail.outbox[1].subject.endswith(
        "Reminder: second review overdue for update_credit_limit on 4471"
    )
    assert AuditEvent.objects.filter(proposal_id=proposal.pk).latest("id") == event
    with django_capture_on_commit_callbacks(execute=True):  # the next reminder waits another day
        assert proposals_escalate_and_expire() == (0, 0)
    assert len(mail.outbox) == 2

    # In the queue for everyone who looks, and in the agent's view of it.
    client.force_login(user("operator"))
    listed = client.get(CHANGELIST, {"queue": "review_overdue"}).content.decode()
    assert str(proposal.pk) in listed and "overdue (escalated)" in listed
    body = agent_client().get(f"/api/v1/proposals/{proposal.pk}").json()
    assert body["review"]["status"] == "due" and body["review"]["escalated_at"] is not None

    proposal_review(proposal_id=proposal.pk, user=user("reviewer"), channel="admin", flag=False)
    assert str(proposal.pk) not in client.get(CHANGELIST, {"queue": "review_overdue"}).content.decode()
    body = agent_client().get(f"/api/v1/proposals/{proposal.pk}").json()
    assert body["review"]["status"] == "reviewed" and body["review"]["by"] == "reviewer"


def test_an_overdue_review_before_execution_escalates_the_proposal_which_still_waits_for_it(crm_demo):
    band = ThresholdBand.objects.get(rule__name="Credit limit changes on crm", mode="dual")
    band.review_timing = ReviewTiming.BEFORE_EXECUTION
    band.save()
    threshold_rule_sign_off(rule=band.rule, user=user("owner"), channel="command")  # a changed band is signed again
    proposal = propose_limit("8000.00")
    proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    Proposal.objects.filter(pk=proposal.pk).update(review_due_at=timezone.now() - timedelta(minutes=1))

    assert proposals_escalate_and_expire() == (1, 0)
    escalated = Proposal.objects.get(pk=proposal.pk)
    assert escalated.status == ProposalStatus.ESCALATED and escalated.awaiting_review
    assert verbs(proposal)[-1] == ("escalated", "review overdue")
    assert proposals_escalate_and_expire() == (0, 0)

    reviewed = proposal_review(proposal_id=proposal.pk, user=user("reviewer"), channel="admin", flag=False)
    assert reviewed.status == ProposalStatus.APPROVED


# --- A flag after execution: a reversal that waits for the approver ---------------------------------------------


def test_a_dual_proposal_flagged_after_execution_has_a_reversal_waiting_for_the_approver_then_the_worker_reverses_it(
    live, client
):
    proposal_id = (
        live.agent()
        .post(
            "/api/v1/proposals",
            json={
                "system": "crm",
                "action": "update_credit_limit",
                "record_id": "4471",
                "payload": {"credit_limit": "8000.00"},
                "reason": "big customer",
            },
        )
        .json()["id"]
    )
    proposal_approve(proposal_id=proposal_id, user=user("approver"), channel="admin")
    live.wait_for(proposal_id, "executed")
    assert live.crm_account("4471")["credit_limit"] == "8000.00"
    mail.outbox.clear()

    proposal_review(proposal_id=proposal_id, user=user("reviewer"), channel="admin", flag=True, comment="In arrears.")

    reversal = Reversal.objects.get(proposal_id=proposal_id)
    assert reversal.awaits_approval and reversal.status == Reversal.Status.PLANNED and reversal.approved_by is None
    assert list(reversal.steps.values_list("kind", flat=True)) == [ReversalStep.Kind.REVERSIBLE]
    assert (mail.outbox[-1].to, "awaits approval" in mail.outbox[-1].subject) == (
        ["approver@gatehouse.example", "owner@gatehouse.example"],
        True,
    )
    with pytest.raises(ReversalRefused, match="waits for the approval"):  # no door starts it before the approver
        reversal_start(reversal_id=reversal.pk, channel="command")
    with pytest.raises(NotYourReversal, match="you flagged it"):
        proposal_reversal_approve(reversal_id=reversal.pk, user=user("reviewer"), channel="admin")
    assert live.crm_account("4471")["credit_limit"] == "8000.00"  # nothing undone yet

    client.force_login(user("approver"))
    page = client.get(f"{CHANGELIST}{proposal_id}/change/").content.decode()
    assert "waits for the approver" in page and 'id="approve-reversal-button"' in page
    response = client.post(f"{CHANGELIST}{proposal_id}/decide/", {"step": "approve_reversal"})
    assert response.status_code == 302

    live.wait_for(proposal_id, "reversed")
    assert live.crm_account("4471")["credit_limit"] == "2000.00"
    reversal.refresh_from_db()
    assert reversal.approved_by == user("approver") and reversal.status == Reversal.Status.DONE
    trail = verbs(Proposal.objects.get(pk=proposal_id))
    assert ("reversal_planned", "awaits_approval") in trail and ("reversal_planned", "approved") in trail
    assert trail[-1][0] == "reversed"


# --- One write reversed from its page, or by the command -------------------------------------------------------


def test_a_flag_whose_reversal_was_not_planned_gets_it_from_the_sweep_once(
    crm_demo, django_capture_on_commit_callbacks
):
    """The process died between the flag's commit and the plan: the beat sweep plans it, and only once."""
    proposal = executed_dual()
    Proposal.objects.filter(pk=proposal.pk).update(  # the flag, committed; the plan after it never ran
        review_outcome="flagged", reviewed_by=user("reviewer"), reviewed_at=timezone.now(), review_comment="Arrears."
    )
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        escalate_and_expire()
        assert Reversal.objects.filter(proposal=proposal).count() == 1
        escalate_and_expire()  # the review's own plan, late: the same reversal
        flagged_reversal_plan(proposal=Proposal.objects.get(pk=proposal.pk), user=user("reviewer"), channel="admin")

    (reversal,) = Reversal.objects.filter(proposal=proposal)
    assert reversal.awaits_approval and reversal.status == Reversal.Status.PLANNED and reversal.approved_by is None
    assert len([m for m in mail.outbox if "awaits approval" in m.subject]) == 1


def test_a_flagged_writes_reversal_is_the_approvers_at_every_door_not_a_fresh_one_by_the_flagger(crm_demo):
    """The reviewer who flagged it may reverse writes in general (an operator, say): not this one, whose reversal
    waits for the approver."""
    proposal = executed_dual()
    flagger = user("reviewer")
    flagger.groups.add(Group.objects.get(name="Operators"))
    proposal_review(proposal_id=proposal.pk, user=flagger, channel="admin", flag=True, comment="In arrears.")

    with pytest.raises(NotYourReversal, match="waits for its approver"):
        proposal_reverse(proposal_id=proposal.pk, user=flagger, channel="admin", reason="my own way")

    assert Reversal.objects.filter(proposal=proposal).count() == 1


def test_an_operator_reverses_one_write_from_its_page_with_a_confirmation(crm_demo, client):
    proposal = executed_dual()
    page = f"{CHANGELIST}{proposal.pk}/change/"
    client.force_login(user("auditor"))
    assert 'id="reverse-button"' not in client.get(page).content.decode()
    client.post(f"{CHANGELIST}{proposal.pk}/decide/", {"step": "reverse", "confirm": "yes"})
    assert not Reversal.objects.exists()  # the service refused the auditor

    client.force_login(user("operator"))
    assert 'id="reverse-button"' in client.get(page).content.decode()
    client.post(f"{CHANGELIST}{proposal.pk}/decide/", {"step": "reverse", "reason": "wrong account"})
    assert not Reversal.objects.exists()  # not confirmed: nothing planned
    client.post(f"{CHANGELIST}{proposal.pk}/decide/", {"step": "reverse", "reason": "wrong account", "confirm": "yes"})
    reversal = Reversal.objects.get()
    assert reversal.proposal_id == proposal.pk and not reversal.awaits_approval
    assert reversal.status == Reversal.Status.RUNNING and reversal.requested_by == user("operator")


@pytest.mark.django_db
def test_someone_who_may_not_approve_the_write_may_not_reverse_it(crm_demo):
    proposal = executed_dual()
    with pytest.raises(NotYourReversal):
        proposal_reverse(proposal_id=proposal.pk, user=user("auditor"), channel="admin")
    assert proposal_reverse(proposal_id=proposal.pk, user=user("approver"), channel="admin", start=False).pk


def test_reverse_writes_plans_one_proposals_write_and_refuses_an_unknown_id(crm_demo):
    proposal = executed_dual()
    out = io.StringIO()
    call_command("reverse_writes", "--proposal", str(proposal.pk), stdout=out)
    text = out.getvalue()
    assert (
        f"of proposal {proposal.pk}: 1 write(s)" in text and "REVERSIBLE: Will set credit_limit back to 2000.00" in text
    )
    assert "Nothing was changed (plan only)" in text
    assert Reversal.objects.get().status == Reversal.Status.PLANNED
    with pytest.raises(CommandError, match="No proposal"):
        call_command("reverse_writes", "--proposal", "not-a-uuid", stdout=io.StringIO())
