"""Delegation (issue 17, item 7): an approver names a delegate for a period; the delegate decides what the approver
could, under the same separation of duties, one level only; escalation hands an overdue proposal to the delegate (or
on-call) so it does not expire because one person was away. Every reassignment and every delegation is audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from approvals.choices import ProposalStatus
from approvals.decisions import NotYourDecision, proposal_approve, proposal_review, proposals_escalate_and_expire
from approvals.delegation import delegation_create, delegation_end
from approvals.models import Delegation, Proposal
from audit.models import AuditEvent
from governance.choices import Role
from tests.factories import propose_limit, record_execution

User = get_user_model()


def user(username: str):
    return User.objects.get(username=username)


def away(who: str, delegate: str, *, by: str | None = None, days: int = 7) -> Delegation:
    now = timezone.now()
    return delegation_create(
        who=user(who),
        delegate=user(delegate),
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(days=days),
        reason="out of office",
        user=user(by or who),
        channel="admin",
    )


@pytest.fixture
def deputy(db, f):
    """A second approver, to stand in for the demo's `approver`."""
    return f.UserFactory(username="deputy", email="deputy@example.com", roles=[Role.APPROVERS])


# --- Naming a delegate -------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_naming_a_delegate_is_audited_as_configured_with_the_terms(demo, deputy):
    delegation = away("approver", "deputy")
    event = AuditEvent.objects.filter(verb="configured", resource="delegation").get()
    assert event.person == user("approver") and event.record_id == str(delegation.pk)
    assert event.state_before is None and event.state_after["delegate"] == "deputy"

    delegation_end(delegation_id=delegation.pk, user=user("approver"), channel="admin")
    ended = AuditEvent.objects.filter(verb="configured", resource="delegation").latest("id")
    assert ended.state_before["ends_at"] != ended.state_after["ends_at"]
    assert not Delegation.objects.get(pk=delegation.pk).active


@pytest.mark.django_db
def test_a_delegation_is_refused_for_someone_else_to_oneself_overlapping_or_in_a_chain(demo, deputy, f):
    with pytest.raises(PermissionDenied):
        away("approver", "deputy", by="reviewer")  # only the person (or a superuser)
    away("approver", "deputy", by="admin")  # a superuser may, for anyone
    f.UserFactory(username="third", roles=[Role.APPROVERS])
    with pytest.raises(ValidationError, match="already has a delegate"):
        away("approver", "third")
    with pytest.raises(ValidationError, match="cannot delegate to yourself"):
        away("reviewer", "reviewer")
    with pytest.raises(ValidationError, match="cannot pass that on"):
        away("deputy", "third")  # deputy stands in for approver: no chain
    with pytest.raises(ValidationError, match="is away for part of this period too"):
        away("third", "approver")  # approver is away, having named a delegate
    assert Delegation.objects.count() == 1


@pytest.mark.django_db
def test_a_delegation_to_someone_who_cannot_sign_in_is_refused_by_the_service_whatever_the_door(demo, f):
    """The admin's form offers staff only; the service refuses the rest itself (a crafted POST, the own page)."""
    f.UserFactory(username="customer", is_staff=False)
    with pytest.raises(ValidationError, match="customer cannot sign in to Gatehouse"):
        away("approver", "customer")
    assert not Delegation.objects.exists()


def test_only_an_approver_can_be_named_a_delegate_and_stands_in_only_while_still_one(crm_demo, deputy):
    """An auditor watches and an operator runs the system: neither may be handed decisions by a delegation. A
    delegate taken out of the Approvers group later (by hand, or by single sign-on's roles) stops standing in."""
    for person in ("auditor", "reviewer"):
        with pytest.raises(ValidationError, match=f"{person} is not in the Approvers group"):
            away("approver", person)
    assert not Delegation.objects.exists()

    away("approver", "deputy")
    proposal = propose_limit("5000.00")
    assert list(Proposal.objects.awaiting_decision_by(deputy)) == [proposal]
    deputy.groups.remove(Group.objects.get(name=Role.APPROVERS))
    assert not Proposal.objects.awaiting_decision_by(deputy).exists()
    with pytest.raises(NotYourDecision, match="assigned to approver"):
        proposal_approve(proposal_id=proposal.pk, user=deputy, channel="admin")


# --- The delegate decides, bound like anyone --------------------------------------------------------------------


def test_the_active_delegate_approves_what_the_named_approver_could_and_sees_it_in_their_queue(crm_demo, deputy):
    proposal = propose_limit("5000.00")
    assert proposal.approver == user("approver")
    with pytest.raises(NotYourDecision):
        proposal_approve(proposal_id=proposal.pk, user=deputy, channel="admin")

    delegation = away("approver", "deputy")
    assert list(Proposal.objects.awaiting_decision_by(deputy)) == [proposal]
    delegation_end(delegation_id=delegation.pk, user=user("approver"), channel="admin")
    assert not Proposal.objects.awaiting_decision_by(deputy).exists()

    Delegation.objects.all().delete()  # the ended one overlaps the minute before now: start afresh
    away("approver", "deputy")
    approved = proposal_approve(proposal_id=proposal.pk, user=deputy, channel="admin")
    assert approved.status == ProposalStatus.APPROVED and approved.decided_by == deputy


def test_a_delegate_who_owns_the_agent_may_not_approve_its_proposal(crm_demo):
    user("owner").groups.add(Group.objects.get(name=Role.APPROVERS))  # an owner who also approves
    away("approver", "owner")  # the owner of collections-agent
    proposal = propose_limit("5000.00")
    with pytest.raises(NotYourDecision, match="you own the agent"):
        proposal_approve(proposal_id=proposal.pk, user=user("owner"), channel="admin")


def test_the_approver_whose_delegate_approved_may_not_give_the_second_review(crm_demo, deputy):
    user("approver").groups.add(Group.objects.get(name=Role.REVIEWERS))
    deputy.groups.add(Group.objects.get(name=Role.REVIEWERS))
    away("approver", "deputy")
    proposal = propose_limit("8000.00")  # dual: approver, then a second reviewer
    proposal_approve(proposal_id=proposal.pk, user=deputy, channel="admin")
    record_execution(proposal)  # the demo's dual band reviews after execution
    with pytest.raises(NotYourDecision, match="approved in your place"):
        proposal_review(proposal_id=proposal.pk, user=user("approver"), channel="admin", flag=False)
    with pytest.raises(NotYourDecision, match="you approved it"):
        proposal_review(proposal_id=proposal.pk, user=deputy, channel="admin", flag=False)


def test_a_delegates_own_delegate_does_not_act_for_the_first_person(crm_demo, deputy, f):
    third = f.UserFactory(username="third", roles=[Role.APPROVERS])
    away("approver", "deputy", days=1)
    now = timezone.now()  # deputy is away later, naming third: that does not reach approver's proposals
    Delegation.objects.create(
        who=deputy,
        delegate=third,
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(days=1),
        reason="made before the check",
        created_by=deputy,
    )
    proposal = propose_limit("5000.00")
    with pytest.raises(NotYourDecision, match="assigned to approver"):
        proposal_approve(proposal_id=proposal.pk, user=third, channel="admin")


# --- Escalation reassigns ---------------------------------------------------------------------------------------


def test_past_its_sla_a_proposal_is_reassigned_to_the_approvers_delegate_audited_and_emailed(
    crm_demo, deputy, django_capture_on_commit_callbacks
):
    away("approver", "deputy")
    proposal = propose_limit("5000.00")
    Proposal.objects.filter(pk=proposal.pk).update(sla_due_at=timezone.now() - timedelta(minutes=1))
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        assert proposals_escalate_and_expire() == (1, 0)

    escalated = Proposal.objects.get(pk=proposal.pk)
    assert escalated.status == ProposalStatus.ESCALATED and escalated.reassigned_to == deputy
    event = AuditEvent.objects.get(proposal_id=proposal.pk, verb="reassigned")
    assert event.state_before["reassigned_to"] is None and event.state_after["reassigned_to"] == "deputy"
    assert "approver is away and named deputy" in event.input["reason"]
    assert [message.to for message in mail.outbox if "Reassigned to you" in message.subject] == [["deputy@example.com"]]
    assert proposal_approve(proposal_id=proposal.pk, user=deputy, channel="admin").status == ProposalStatus.APPROVED


def test_a_reassignment_to_a_delegate_lapses_with_the_delegation(crm_demo, deputy):
    """Handed to the delegate at escalation; the approver is back and ends the delegation: the ex-delegate no longer
    decides it (nor, through may_decide, reverses it)."""
    delegation = away("approver", "deputy")
    proposal = propose_limit("5000.00")
    Proposal.objects.filter(pk=proposal.pk).update(sla_due_at=timezone.now() - timedelta(minutes=1))
    proposals_escalate_and_expire()
    assert Proposal.objects.get(pk=proposal.pk).reassigned_to == deputy

    delegation_end(delegation_id=delegation.pk, user=user("approver"), channel="admin")

    with pytest.raises(NotYourDecision):
        proposal_approve(proposal_id=proposal.pk, user=deputy, channel="admin")


def test_past_its_sla_without_a_delegate_the_on_call_group_may_decide_it_and_without_on_call_nothing_moves(
    crm_demo,
):
    proposal = propose_limit("5000.00")
    Proposal.objects.filter(pk=proposal.pk).update(sla_due_at=timezone.now() - timedelta(minutes=1))
    assert proposals_escalate_and_expire() == (1, 0)
    escalated = Proposal.objects.get(pk=proposal.pk)
    assert escalated.reassigned_group == Group.objects.get(name=Role.OPERATORS)
    assert Proposal.objects.awaiting_decision_by(user("operator")).filter(pk=proposal.pk).exists()

    user("operator").groups.clear()  # nobody on call: escalated and e-mailed only, as before
    other = propose_limit("5000.00", record="4472")
    Proposal.objects.filter(pk=other.pk).update(sla_due_at=timezone.now() - timedelta(minutes=1))
    assert proposals_escalate_and_expire() == (1, 0)
    assert Proposal.objects.get(pk=other.pk).reassigned_group is None
    assert not AuditEvent.objects.filter(proposal_id=other.pk, verb="reassigned").exists()


# --- The admin saves through the service ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_delegation_made_in_the_admin_is_audited_and_only_for_oneself(demo, deputy, client):
    client.force_login(user("approver"))
    now = timezone.now()
    form = {
        "who": user("approver").pk,
        "delegate": deputy.pk,
        "starts_at_0": now.strftime("%Y-%m-%d"),
        "starts_at_1": now.strftime("%H:%M:%S"),
        "ends_at_0": (now + timedelta(days=3)).strftime("%Y-%m-%d"),
        "ends_at_1": "12:00:00",
        "reason": "holiday",
    }
    response = client.post("/admin/approvals/delegation/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Delegation.objects.get().created_by == user("approver")
    assert AuditEvent.objects.filter(verb="configured", resource="delegation", person=user("approver")).exists()

    response = client.post("/admin/approvals/delegation/add/", {**form, "who": user("reviewer").pk})
    assert response.status_code == 200 and Delegation.objects.count() == 1  # not a choice for a non-superuser
