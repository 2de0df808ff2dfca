"""The life of a proposal after it is made: racing approvers, the SLA and the maximum age by the database clock,
separation of duties, dual approval with the second review before or after execution, manual tasks on propose-only
systems, the e-mails, the admin queue and the proposal page, the agent's cancel, and an execution task delivered
again (a duplicate, counted, not audited).

Every state change leaves exactly one audit event naming who acted (`Trail`)."""

from __future__ import annotations

import re
import socket
import threading
from datetime import timedelta
from decimal import Decimal
from html import unescape

import pytest
from celery import current_app
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.core import mail
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from approvals.choices import DecisionMode, ProposalStatus, ReviewOutcome
from approvals.decisions import (
    NotYourDecision,
    proposal_approve,
    proposal_manual_complete,
    proposal_reject,
    proposal_review,
    proposals_escalate_and_expire,
)
from approvals.execution import proposal_claim, proposal_execute, proposal_record_executed
from approvals.models import OutboxMessage, Proposal
from approvals.notify import notify_awaiting_by_id
from approvals.services import proposal_cancel
from approvals.transitions import InvalidTransition
from audit.models import AuditEvent
from core.errors import InvalidState
from governance.choices import Role, WriteMode
from governance.models import ActionType, Agent, System, ThresholdRule
from tests.factories import propose_limit as propose
from tests.factories import record_execution as execute

User = get_user_model()

CHANGELIST = "/admin/approvals/proposal/"


# --- Helpers ----------------------------------------------------------------------------------------------------


class Trail:
    """The audit events written since the last look, as (verb, actor, person): one per state change."""

    def __init__(self) -> None:
        self.mark = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def new(self) -> list[tuple[str, str, str | None]]:
        rows = list(AuditEvent.objects.filter(id__gt=self.mark).select_related("person").order_by("id"))
        if rows:
            self.mark = rows[-1].id
        return [(event.verb, event.actor, event.person.username if event.person else None) for event in rows]


def user(username: str):
    return User.objects.get(username=username)


def join(username: str, role: str) -> None:
    user(username).groups.add(Group.objects.get(name=role))


def build(
    *,
    mode: str = DecisionMode.SINGLE,
    timing: str = "",
    approver: str | None = "approver",
    approver_group: str | None = None,
    status: str = ProposalStatus.PENDING_APPROVAL,
    **fields,
) -> Proposal:
    """A proposal row as proposal_create would leave it, for the cases the demo rule does not produce."""
    crm = System.objects.get(slug="crm")
    action = ActionType.objects.get(system=crm, name="update_credit_limit")
    rule = ThresholdRule.objects.get(system=crm, action_type=action)
    dual = mode == DecisionMode.DUAL
    now = timezone.now()
    values = {
        "agent": Agent.objects.get(slug="collections-agent"),
        "system": crm,
        "action_type": action,
        "record_id": "4471",
        "payload": {"credit_limit": "8000.00" if dual else "5000.00"},
        "reason": "Paid on time for a year.",
        "status": status,
        "channel": "api",
        "impact_amount": Decimal("6000.00" if dual else "3000.00"),
        "impact_currency": "USD",
        "mode": mode,
        "decision": {"mode": mode, "reason": "built by the test"},
        "rule": rule,
        "approver": user(approver) if approver else None,
        "approver_group": Group.objects.get(name=approver_group) if approver_group else None,
        "review_group": Group.objects.get(name=Role.REVIEWERS) if dual else None,
        "review_timing": timing,
        "review_within": timedelta(hours=24) if dual else None,
        "sla_due_at": now + timedelta(hours=4),
        "expires_at": now + rule.max_age,
        "record_snapshot": {"credit_limit": "2000.00"},
        **fields,
    }
    return Proposal.objects.create(**values)


def refreshed(proposal: Proposal) -> Proposal:
    return Proposal.objects.get(pk=proposal.pk)


def outbox_rows(proposal: Proposal) -> int:
    return OutboxMessage.objects.filter(proposal_id=proposal.pk).count()


def send_notifications(callbacks) -> None:
    """Run the e-mail callbacks a commit would run. The outbox's publish callback is left out: this test's transaction
    is rolled back, so a worker handed the proposal could never see it."""
    for callback in callbacks:
        if "notify" in callback.__code__.co_names:
            callback()


def past(**delta) -> object:
    return timezone.now() - timedelta(**delta)


@pytest.fixture
def crm_propose_only(crm_demo) -> System:
    crm = System.objects.get(slug="crm")
    crm.write_mode = WriteMode.PROPOSE_ONLY
    crm.save()
    return crm


# --- 1. Two approvers at once (PostgreSQL row locks) ------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "second", ["approver", "approver2"], ids=["the-same-approver-double-clicking", "two-group-members"]
)
def test_two_approvers_clicking_at_once_approve_once_and_it_executes_once(live, f, second):
    f.UserFactory(username="approver2", roles=[Role.APPROVERS])
    proposal = propose("5000.00")
    assert proposal.status == ProposalStatus.PENDING_APPROVAL
    Proposal.objects.filter(pk=proposal.pk).update(approver=None, approver_group=Group.objects.get(name=Role.APPROVERS))
    people = [user("approver"), user(second)]
    trail = Trail()
    barrier = threading.Barrier(len(people), timeout=10)
    outcomes: dict[int, str] = {}

    def approve(index: int, person) -> None:
        try:
            barrier.wait()
            proposal_approve(proposal_id=proposal.pk, user=person, channel="admin")
            outcomes[index] = "approved"
        except InvalidTransition as exc:
            outcomes[index] = f"refused: {exc}"
        except Exception as exc:  # anything else is the test's failure, reported below
            outcomes[index] = f"error: {exc!r}"
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(index, person)) for index, person in enumerate(people)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes.values())[0] == "approved", outcomes
    assert sorted(outcomes.values())[1].startswith("refused: "), outcomes
    assert "already" in sorted(outcomes.values())[1]
    winner = people[next(index for index, outcome in outcomes.items() if outcome == "approved")]
    decided = refreshed(proposal)
    assert decided.decided_by == winner
    assert AuditEvent.objects.filter(proposal_id=proposal.pk, verb="approved").count() == 1
    assert trail.new()[0] == ("approved", winner.username, winner.username)
    assert outbox_rows(proposal) == 1

    live.wait_for(proposal.pk, "executed")
    assert live.crm_account("4471")["credit_limit"] == "5000.00"
    assert live.crm_writes(str(proposal.pk)) == 1
    assert AuditEvent.objects.filter(proposal_id=proposal.pk, verb="executed").count() == 1


# --- 2. SLA and maximum age, by the database clock --------------------------------------------------------------


def test_past_its_sla_a_proposal_escalates_once_and_emails_the_approver_and_on_call_then_expires(
    crm_demo, agent_client, django_capture_on_commit_callbacks
):
    proposal = propose("5000.00")
    assert proposal.status == ProposalStatus.PENDING_APPROVAL and proposal.approver == user("approver")
    trail = Trail()

    assert proposals_escalate_and_expire() == (0, 0)  # nothing is due yet
    assert trail.new() == []

    Proposal.objects.filter(pk=proposal.pk).update(sla_due_at=past(minutes=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert proposals_escalate_and_expire() == (1, 0)
    escalated = refreshed(proposal)
    assert escalated.status == ProposalStatus.ESCALATED
    assert escalated.decided_by is None and escalated.decided_at is None
    assert outbox_rows(proposal) == 0  # never approved by the clock
    # The approver has no delegate: the on-call group (the demo's operators) may decide it as well, and is told.
    assert trail.new() == [("escalated", "gatehouse", None), ("reassigned", "gatehouse", None)]
    assert escalated.reassigned_group == Group.objects.get(name=Role.OPERATORS)
    assert escalated.approver == user("approver")  # whom the rule named still decides too
    # One message each: a person who may decide gets a link of their own (tests/approvals/test_email_links.py).
    assert [message.to for message in mail.outbox] == [
        ["approver@gatehouse.example"],
        ["crm-oncall@gatehouse.example"],
        ["operator@gatehouse.example"],
    ]
    assert all("past its SLA" in message.subject for message in mail.outbox)
    assert f"/admin/approvals/proposal/{proposal.pk}/link/" in mail.outbox[0].body
    assert f"/admin/approvals/proposal/{proposal.pk}/change/" in mail.outbox[1].body
    assert "Reassigned to you" in mail.outbox[2].subject

    with django_capture_on_commit_callbacks(execute=True):
        assert proposals_escalate_and_expire() == (0, 0)  # a second run changes nothing
    assert refreshed(proposal).status == ProposalStatus.ESCALATED
    assert trail.new() == []
    assert len(mail.outbox) == 3

    Proposal.objects.filter(pk=proposal.pk).update(expires_at=past(minutes=1))
    assert proposals_escalate_and_expire() == (0, 1)
    assert refreshed(proposal).status == ProposalStatus.EXPIRED
    assert trail.new() == [("expired", "gatehouse", None)]
    assert proposals_escalate_and_expire() == (0, 0)
    assert trail.new() == []

    response = agent_client("collections-agent").get(f"/api/v1/proposals/{proposal.pk}")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "expired"
    assert outbox_rows(proposal) == 0


def test_an_escalated_proposal_can_still_be_approved_by_its_approver(demo):
    proposal = build(sla_due_at=past(minutes=1))
    assert proposals_escalate_and_expire() == (1, 0)
    trail = Trail()
    approved = proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    assert approved.status == ProposalStatus.APPROVED
    assert trail.new() == [("approved", "approver", "approver")]
    assert outbox_rows(proposal) == 1


@pytest.mark.parametrize("status", [ProposalStatus.PENDING_APPROVAL, ProposalStatus.ESCALATED])
def test_an_approval_after_the_maximum_age_is_refused_and_the_proposal_expires_exactly_once(demo, status):
    proposal = build(status=status, expires_at=past(seconds=1))  # the expiry job has not run yet
    trail = Trail()

    with pytest.raises(InvalidTransition, match="expired"):
        proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")

    expired = refreshed(proposal)
    assert expired.status == ProposalStatus.EXPIRED
    assert expired.decided_by is None
    assert outbox_rows(proposal) == 0
    assert trail.new() == [("expired", "gatehouse", None)]

    assert proposals_escalate_and_expire() == (0, 0)  # the job comes later and finds nothing to do
    with pytest.raises(InvalidTransition, match="already expired"):
        proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    with pytest.raises(InvalidTransition, match="already expired"):
        proposal_reject(proposal_id=proposal.pk, user=user("approver"), channel="admin", reason="too late")
    assert trail.new() == []
    assert refreshed(proposal).status == ProposalStatus.EXPIRED


def test_a_rejection_after_the_maximum_age_finds_it_expired_as_an_approval_would(demo):
    """Whoever acts on a proposal past its maximum age finds it expired: the outcome does not depend on the button."""
    proposal = build(expires_at=past(seconds=1))  # the expiry job has not run yet
    trail = Trail()

    with pytest.raises(InvalidTransition, match="expired before it was decided"):
        proposal_reject(proposal_id=proposal.pk, user=user("approver"), channel="admin", reason="too late")

    expired = refreshed(proposal)
    assert expired.status == ProposalStatus.EXPIRED and expired.decided_by is None and expired.decision_comment == ""
    assert trail.new() == [("expired", "gatehouse", None)]
    assert proposals_escalate_and_expire() == (0, 0)


def test_a_withdrawal_after_the_maximum_age_finds_it_expired(demo):
    proposal = build(expires_at=past(seconds=1))
    trail = Trail()

    with pytest.raises(InvalidState, match="expired before it was decided"):
        proposal_cancel(proposal_id=proposal.pk, agent=proposal.agent, channel="api")

    assert refreshed(proposal).status == ProposalStatus.EXPIRED
    assert trail.new() == [("expired", "gatehouse", None)]


def test_a_second_review_after_the_maximum_age_is_refused_and_the_proposal_expires(demo):
    proposal = build(mode=DecisionMode.DUAL, timing="before")
    proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    Proposal.objects.filter(pk=proposal.pk).update(expires_at=past(seconds=1))  # the expiry job has not run yet
    trail = Trail()

    with pytest.raises(InvalidTransition, match="expired"):
        proposal_review(proposal_id=proposal.pk, user=user("reviewer"), channel="admin", flag=False)

    expired = refreshed(proposal)
    assert expired.status == ProposalStatus.EXPIRED
    assert expired.reviewed_by is None and expired.review_outcome == ""
    assert outbox_rows(proposal) == 0
    assert trail.new() == [("expired", "gatehouse", None)]
    assert proposals_escalate_and_expire() == (0, 0)


# --- 3. Separation of duties ------------------------------------------------------------------------------------


def assert_refused_and_audited(proposal: Proposal, trail: Trail, username: str, step: str) -> None:
    """Nothing changed but one `denied` event naming the person."""
    after = refreshed(proposal)
    assert after.status == proposal.status
    assert after.decided_by_id == proposal.decided_by_id
    assert after.reviewed_by_id is None and after.review_outcome == ""
    assert outbox_rows(proposal) == 0
    assert trail.new() == [("denied", username, username)]
    denied = AuditEvent.objects.filter(proposal_id=proposal.pk, verb="denied").latest("id")
    assert denied.person == user(username)
    assert denied.outcome == "not_your_decision"
    assert f"{username} may not {step} this proposal" in denied.summary


def named_approver(_) -> Proposal:
    return build()


def approvers_group(_) -> Proposal:
    return build(approver=None, approver_group=Role.APPROVERS)


def owner_in_approvers_group(_) -> Proposal:
    join("owner", Role.APPROVERS)
    return build(approver=None, approver_group=Role.APPROVERS)


def owner_named_approver(_) -> Proposal:
    return build(approver="owner")


@pytest.mark.parametrize(
    ("make", "username", "refusal"),
    [
        (named_approver, "reviewer", "it is assigned to approver"),
        (named_approver, "admin", "it is assigned to approver"),
        (approvers_group, "operator", "you are not in the Approvers group"),
        (owner_in_approvers_group, "owner", "you own the agent collections-agent (separation of duties)"),
        (owner_named_approver, "owner", "you own the agent collections-agent (separation of duties)"),
    ],
    ids=[
        "not-the-named-approver",
        "not-even-a-superuser",
        "not-in-the-approver-group",
        "the-agents-owner-in-the-group",
        "the-agents-owner-named",
    ],
)
@pytest.mark.parametrize("step", ["approve", "reject"])
def test_someone_who_may_not_decide_is_refused_and_the_attempt_is_audited(demo, make, username, refusal, step):
    proposal = make(None)
    assert proposal.rule.owner_may_not_approve
    trail = Trail()
    with pytest.raises(NotYourDecision, match=refusal.replace("(", r"\(").replace(")", r"\)")):
        if step == "approve":
            proposal_approve(proposal_id=proposal.pk, user=user(username), channel="admin")
        else:
            proposal_reject(proposal_id=proposal.pk, user=user(username), channel="admin", reason="No.")
    assert_refused_and_audited(proposal, trail, username, step)


def approved_by_approver(timing: str) -> Proposal:
    if timing == "before":
        return build(mode=DecisionMode.DUAL, timing="before", decided_by=user("approver"), decided_at=timezone.now())
    return build(
        mode=DecisionMode.DUAL,
        timing="after",
        status=ProposalStatus.EXECUTED,
        decided_by=user("approver"),
        decided_at=timezone.now(),
        executed_at=timezone.now(),
    )


@pytest.mark.parametrize("timing", ["before", "after"])
@pytest.mark.parametrize(
    ("username", "joins_reviewers", "refusal"),
    [
        ("approver", True, "you approved it: the second reviewer must be someone else"),
        ("operator", False, "you are not in the review group (Reviewers)"),
        ("owner", True, "you own the agent collections-agent (separation of duties)"),
    ],
    ids=["the-approver-even-in-reviewers", "not-in-the-review-group", "the-agents-owner-in-reviewers"],
)
def test_someone_who_may_not_give_the_second_review_is_refused_and_audited(
    demo, timing, username, joins_reviewers, refusal
):
    if joins_reviewers:
        join(username, Role.REVIEWERS)
    proposal = approved_by_approver(timing)
    assert proposal.awaiting_review
    trail = Trail()
    for flag in (False, True):
        with pytest.raises(NotYourDecision, match=refusal.replace("(", r"\(").replace(")", r"\)")):
            proposal_review(proposal_id=proposal.pk, user=user(username), channel="admin", flag=flag, comment="hm")
        assert_refused_and_audited(proposal, trail, username, "review")


def test_nobody_approves_a_dual_proposal_twice(demo):
    proposal = build(mode=DecisionMode.DUAL, timing="before")
    proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    trail = Trail()
    with pytest.raises(InvalidTransition, match="approver already approved this proposal"):
        proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    with pytest.raises(InvalidTransition, match="awaits the second review"):
        proposal_reject(proposal_id=proposal.pk, user=user("approver"), channel="admin", reason="Changed my mind.")
    assert trail.new() == []
    assert AuditEvent.objects.filter(proposal_id=proposal.pk, verb="approved").count() == 1
    assert refreshed(proposal).status == ProposalStatus.PENDING_APPROVAL


@pytest.mark.parametrize("reason", ["", "   \n"])
def test_a_rejection_without_a_reason_is_refused_and_changes_nothing(demo, reason):
    proposal = build()
    trail = Trail()
    with pytest.raises(ValueError, match="needs a reason"):
        proposal_reject(proposal_id=proposal.pk, user=user("approver"), channel="admin", reason=reason)
    assert refreshed(proposal).status == ProposalStatus.PENDING_APPROVAL
    assert trail.new() == []


def test_a_rejection_with_a_reason_names_the_approver_and_the_agent_sees_the_reason(demo, agent_client):
    proposal = build()
    trail = Trail()
    rejected = proposal_reject(
        proposal_id=proposal.pk, user=user("approver"), channel="admin", reason="Two invoices overdue."
    )
    assert rejected.status == ProposalStatus.REJECTED and rejected.decided_by == user("approver")
    assert trail.new() == [("rejected", "approver", "approver")]
    assert outbox_rows(proposal) == 0
    body = agent_client("collections-agent").get(f"/api/v1/proposals/{proposal.pk}").json()
    assert body["status"] == "rejected"
    assert body["rejection_reason"] == "Two invoices overdue."


def test_a_crafted_admin_post_by_someone_who_may_not_decide_is_refused_and_audited(demo, client):
    proposal = build()
    client.force_login(user("reviewer"))
    trail = Trail()
    response = client.post(reverse("admin:approvals_decide", args=[proposal.pk]), {"step": "approve", "reason": ""})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:approvals_proposal_change", args=[proposal.pk])
    notes = [(message.level_tag, str(message)) for message in get_messages(response.wsgi_request)]
    assert notes == [("error", "You may not approve this proposal: it is assigned to approver.")]
    assert_refused_and_audited(proposal, trail, "reviewer", "approve")

    response = client.post(reverse("admin:approvals_decide", args=[proposal.pk]), {"step": "reject", "reason": "x"})
    assert response.status_code == 302
    assert_refused_and_audited(proposal, trail, "reviewer", "reject")


def test_a_get_to_the_decide_url_is_forbidden(demo, client):
    proposal = build()
    client.force_login(user("approver"))
    trail = Trail()
    assert client.get(reverse("admin:approvals_decide", args=[proposal.pk])).status_code == 403
    assert refreshed(proposal).status == ProposalStatus.PENDING_APPROVAL
    assert trail.new() == []


# --- 4. Dual approval, review after and before execution --------------------------------------------------------


def test_a_dual_approval_reviewed_after_execution_runs_first_and_is_reviewed_by_a_second_person(crm_demo):
    proposal = propose("8000.00")
    assert proposal.mode == DecisionMode.DUAL and proposal.review_timing == "after"
    assert proposal.impact_amount == Decimal("6000.00")
    trail = Trail()

    approved = proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin", comment="Fine.")
    assert approved.status == ProposalStatus.APPROVED
    assert approved.review_due_at is not None and not approved.awaiting_review
    assert outbox_rows(proposal) == 1
    assert trail.new() == [("approved", "approver", "approver")]
    with pytest.raises(InvalidTransition, match="does not await a second review"):
        proposal_review(proposal_id=proposal.pk, user=user("reviewer"), channel="admin", flag=False)
    assert trail.new() == []

    executed = execute(proposal)
    assert executed.status == ProposalStatus.EXECUTED and executed.awaiting_review
    assert trail.new() == [("executing", "gatehouse", None), ("executed", "gatehouse", "approver")]

    reviewed = proposal_review(proposal_id=proposal.pk, user=user("reviewer"), channel="admin", flag=False)
    assert reviewed.status == ProposalStatus.EXECUTED
    assert reviewed.review_outcome == ReviewOutcome.REVIEWED
    assert reviewed.reviewed_by == user("reviewer") and reviewed.reviewed_at is not None
    assert not refreshed(proposal).awaiting_review
    assert trail.new() == [("reviewed", "reviewer", "reviewer")]
    with pytest.raises(InvalidTransition, match="does not await a second review"):
        proposal_review(proposal_id=proposal.pk, user=user("reviewer"), channel="admin", flag=True, comment="Wait.")
    assert trail.new() == []
    assert outbox_rows(proposal) == 1


def test_a_dual_approval_flagged_after_execution_is_recorded_for_reversal(crm_demo):
    proposal = propose("8000.00")
    proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    execute(proposal)
    trail = Trail()

    with pytest.raises(ValueError, match="Say why"):
        proposal_review(proposal_id=proposal.pk, user=user("reviewer"), channel="admin", flag=True, comment=" ")
    assert trail.new() == []

    flagged = proposal_review(
        proposal_id=proposal.pk, user=user("reviewer"), channel="admin", flag=True, comment="Customer is in arrears."
    )
    assert flagged.status == ProposalStatus.EXECUTED  # it ran already: flagging offers it for reversal
    assert flagged.review_outcome == ReviewOutcome.FLAGGED
    assert flagged.review_comment == "Customer is in arrears."
    # A flag after execution plans the reversal of this write, which waits for its approver (test_reviews.py).
    assert trail.new() == [("flagged", "reviewer", "reviewer"), ("reversal_planned", "reviewer", "reviewer")]
    event = AuditEvent.objects.get(proposal_id=proposal.pk, verb="flagged")
    assert "for reversal (its approver decides the reversal): Customer is in arrears." in event.summary


def test_a_dual_approval_reviewed_before_execution_waits_for_the_second_reviewer(demo):
    proposal = build(mode=DecisionMode.DUAL, timing="before")
    trail = Trail()

    first = proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    assert first.status == ProposalStatus.PENDING_APPROVAL
    assert first.decided_by == user("approver") and first.awaiting_review
    assert outbox_rows(proposal) == 0
    assert trail.new() == [("approved", "approver", "approver")]

    second = proposal_review(proposal_id=proposal.pk, user=user("reviewer"), channel="admin", flag=False)
    assert second.status == ProposalStatus.APPROVED
    assert second.review_outcome == ReviewOutcome.REVIEWED and second.reviewed_by == user("reviewer")
    assert outbox_rows(proposal) == 1
    assert trail.new() == [("reviewed", "reviewer", "reviewer")]


def test_a_dual_approval_flagged_before_execution_is_rejected_and_never_runs(demo, agent_client):
    proposal = build(mode=DecisionMode.DUAL, timing="before")
    proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    trail = Trail()

    flagged = proposal_review(
        proposal_id=proposal.pk, user=user("reviewer"), channel="admin", flag=True, comment="Not in this quarter."
    )
    assert flagged.status == ProposalStatus.REJECTED
    assert flagged.review_outcome == ReviewOutcome.FLAGGED
    assert outbox_rows(proposal) == 0
    assert trail.new() == [("flagged", "reviewer", "reviewer")]
    body = agent_client("collections-agent").get(f"/api/v1/proposals/{proposal.pk}").json()
    assert body["status"] == "rejected" and body["rejection_reason"] == "Not in this quarter."


def test_a_dual_approval_reviewed_before_execution_on_a_propose_only_system_becomes_a_manual_task(demo):
    System.objects.filter(slug="crm").update(write_mode=WriteMode.PROPOSE_ONLY)
    proposal = build(mode=DecisionMode.DUAL, timing="before")
    proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    trail = Trail()

    reviewed = proposal_review(proposal_id=proposal.pk, user=user("reviewer"), channel="admin", flag=False)
    assert reviewed.status == ProposalStatus.MANUAL_TASK
    assert outbox_rows(proposal) == 0  # nothing may write to a propose-only system
    assert trail.new() == [("reviewed", "reviewer", "reviewer")]


# --- 5. Manual tasks on a propose-only system -------------------------------------------------------------------


def test_an_approved_proposal_on_a_propose_only_system_becomes_a_manual_task_done_by_hand(crm_propose_only):
    proposal = propose("5000.00")
    assert proposal.mode == DecisionMode.SINGLE and proposal.approver == user("approver")
    trail = Trail()

    task = proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    assert task.status == ProposalStatus.MANUAL_TASK
    assert outbox_rows(proposal) == 0
    assert trail.new() == [("approved", "approver", "approver")]
    assert "manual task" in AuditEvent.objects.get(proposal_id=proposal.pk, verb="approved").summary
    assert proposal_claim(proposal_id=proposal.pk) is None  # no worker may take it up

    done = proposal_manual_complete(
        proposal_id=proposal.pk, user=user("operator"), channel="admin", done=True, note="Set in the CRM."
    )
    assert done.status == ProposalStatus.EXECUTED and done.executed_at is not None
    assert done.state_after == {"performed_by": "operator", "note": "Set in the CRM."}
    assert trail.new() == [("executed", "operator", "operator")]

    with pytest.raises(InvalidTransition, match="not a manual task"):
        proposal_manual_complete(proposal_id=proposal.pk, user=user("operator"), channel="admin", done=True)
    assert trail.new() == []


def test_a_manual_task_that_could_not_be_done_fails_with_its_note(crm_propose_only):
    proposal = propose("5000.00")
    proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    trail = Trail()

    for note in ("", "  "):
        with pytest.raises(ValueError, match="Say why"):
            proposal_manual_complete(
                proposal_id=proposal.pk, user=user("operator"), channel="admin", done=False, note=note
            )
    assert refreshed(proposal).status == ProposalStatus.MANUAL_TASK
    assert trail.new() == []

    failed = proposal_manual_complete(
        proposal_id=proposal.pk, user=user("operator"), channel="admin", done=False, note="Account is locked."
    )
    assert failed.status == ProposalStatus.FAILED
    assert failed.failure_reason == "Account is locked."
    assert trail.new() == [("failed", "operator", "operator")]


# --- 6. Notifications -------------------------------------------------------------------------------------------


def test_a_new_pending_proposal_emails_its_named_approver_a_link_to_decide(
    crm_demo, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        proposal = propose("5000.00")
    assert proposal.status == ProposalStatus.PENDING_APPROVAL
    assert mail.outbox == []  # the agent's request only queues it: a worker writes and sends the mail
    assert notify_awaiting_by_id(proposal.pk)
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["approver@gatehouse.example"]
    assert "Awaiting your decision: update_credit_limit on 4471" in message.subject
    assert f"/admin/approvals/proposal/{proposal.pk}/link/" in message.body
    assert "Impact: 3,000.00 USD" in message.body
    assert "Paid on time for a year." in message.body


def test_a_proposal_decided_before_the_worker_asks_is_not_asked_about(crm_demo, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        proposal = propose("5000.00")
    proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    assert not notify_awaiting_by_id(proposal.pk)
    assert mail.outbox == []


def test_with_the_broker_down_the_request_to_decide_is_sent_at_once(
    crm_demo, django_capture_on_commit_callbacks, unreachable_broker
):
    """Nobody goes untold: a broker that does not answer when the proposal commits means the mail goes from here."""
    with django_capture_on_commit_callbacks(execute=True):
        proposal = propose("5000.00")
    assert [message.to for message in mail.outbox] == [["approver@gatehouse.example"]]
    assert f"/admin/approvals/proposal/{proposal.pk}/link/" in mail.outbox[0].body


@pytest.fixture
def unreachable_broker():
    """Celery's broker pointed at a port nobody listens on (connections made afresh), as when Redis is down."""
    app = current_app._get_current_object()
    url, pool, producers = app.conf.broker_url, app._pool, app.amqp._producer_pool
    app.conf.broker_url, app._pool, app.amqp._producer_pool = f"redis://127.0.0.1:{closed_port()}/0", None, None
    try:
        yield
    finally:
        if app._pool is not None:
            app._pool.force_close_all()
        app.conf.broker_url, app._pool, app.amqp._producer_pool = url, pool, producers


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_auto_approved_proposal_emails_nobody(crm_demo, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        proposal = propose("2300.00")
    assert proposal.status == ProposalStatus.APPROVED
    send_notifications(callbacks)
    assert mail.outbox == []


def test_a_dual_approval_emails_the_reviewers_other_than_the_approver(crm_demo, f, django_capture_on_commit_callbacks):
    join("approver", Role.REVIEWERS)
    f.UserFactory(username="reviewer2", roles=[Role.REVIEWERS])
    f.UserFactory(username="gone", roles=[Role.REVIEWERS], is_active=False)
    proposal = propose("8000.00")

    with django_capture_on_commit_callbacks() as callbacks:
        proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    send_notifications(callbacks)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["reviewer2@example.com", "reviewer@gatehouse.example"]
    assert "Second review: update_credit_limit on 4471" in message.subject
    assert "approved by approver" in message.body
    assert f"/admin/approvals/proposal/{proposal.pk}/change/" in message.body


# --- 7. The admin queue and the proposal page -------------------------------------------------------------------


def listed(response) -> list[Proposal]:
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_the_approvers_queue_lists_what_awaits_them_and_not_what_was_auto_approved(crm_demo, client):
    auto = propose("2300.00")  # first: the demo rule adds an account's standing raises to the next one
    pending = propose("5000.00")
    assert auto.status == ProposalStatus.APPROVED
    client.force_login(user("approver"))

    response = client.get(CHANGELIST)
    assert listed(response) == [pending]
    assert "3,000.00 USD" in response.content.decode()
    assert listed(client.get(CHANGELIST, {"queue": "review"})) == []
    assert set(listed(client.get(CHANGELIST, {"queue": "all"}))) == {pending, auto}


def test_the_reviewers_queue_is_empty_by_default_and_lists_an_executed_dual_approval_to_review(crm_demo, client):
    proposal = propose("8000.00")
    client.force_login(user("reviewer"))
    assert listed(client.get(CHANGELIST)) == []
    assert listed(client.get(CHANGELIST, {"queue": "review"})) == []  # not yet approved

    proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    execute(proposal)
    assert listed(client.get(CHANGELIST)) == []
    assert listed(client.get(CHANGELIST, {"queue": "review"})) == [proposal]

    client.force_login(user("approver"))  # the approver never reviews their own approval
    join("approver", Role.REVIEWERS)
    assert listed(client.get(CHANGELIST, {"queue": "review"})) == []


def test_the_proposal_page_shows_the_live_diff_the_reason_the_band_and_the_history(crm_demo, client):
    proposal = propose("5000.00", reason="Paid every invoice on time since 2021.")
    client.force_login(user("approver"))
    trail = Trail()

    response = client.get(reverse("admin:approvals_proposal_change", args=[proposal.pk]))
    assert response.status_code == 200
    page = unescape(response.content.decode())
    [row] = response.context["rows"]
    assert row.field == "credit_limit" and row.changes
    assert row.cells == [("then", "2,000.00"), ("live", "2,000.00"), ("proposed", "5,000.00")]
    assert re.search(r'<td class="then"[^>]*>2,000\.00</td>', page)
    assert '<td class="proposed" data-label="Proposed">5,000.00</td>' in page
    assert "Paid every invoice on time since 2021." in page
    assert proposal.decision["reason"] in page and "falls in band" in page
    assert "One approver" in page and "named approver Dana Approver" in page
    assert 'id="approve-button"' in page  # the approver may decide here
    history = [event.summary for event in response.context["history"]]
    assert history[0].startswith("collections-agent proposed update_credit_limit on account 4471")
    assert history[0] in page
    assert trail.new() == [("read", "approver", "approver")]  # the live read of the CRM is audited

    client.force_login(user("reviewer"))
    page = client.get(reverse("admin:approvals_proposal_change", args=[proposal.pk])).content.decode()
    assert 'id="approve-button"' not in page


def test_the_bulk_action_approves_single_band_proposals_and_skips_dual_ones(crm_demo, client):
    single = propose("5000.00")
    dual = propose("8000.00")
    client.force_login(user("approver"))
    trail = Trail()

    response = client.post(
        CHANGELIST,
        {"action": "approve_selected", "_selected_action": [str(single.pk), str(dual.pk)], "index": "0"},
    )
    assert response.status_code == 302
    notes = [str(message) for message in get_messages(response.wsgi_request)]
    assert notes == ["Approved 1 proposal(s); not approved: 4471 (approver and second reviewer: open it to decide)"]
    assert refreshed(single).status == ProposalStatus.APPROVED
    assert refreshed(single).decided_by == user("approver")
    assert refreshed(dual).status == ProposalStatus.PENDING_APPROVAL
    assert refreshed(dual).decided_by is None
    assert outbox_rows(single) == 1 and outbox_rows(dual) == 0
    assert trail.new() == [("approved", "approver", "approver")]
    assert AuditEvent.objects.filter(proposal_id=single.pk, verb="approved").count() == 1
    assert not AuditEvent.objects.filter(proposal_id=dual.pk, verb="approved").exists()


def test_the_bulk_action_does_not_approve_for_someone_who_may_not(crm_demo, client):
    single = propose("5000.00")
    client.force_login(user("reviewer"))
    trail = Trail()
    response = client.post(
        f"{CHANGELIST}?queue=all",
        {"action": "approve_selected", "_selected_action": [str(single.pk)], "index": "0"},
    )
    assert response.status_code == 302
    notes = [str(message) for message in get_messages(response.wsgi_request)]
    assert notes == [
        "Approved 0 proposal(s); not approved: 4471: You may not approve this proposal: it is assigned to approver."
    ]
    assert refreshed(single).status == ProposalStatus.PENDING_APPROVAL
    assert trail.new() == [("denied", "reviewer", "reviewer")]


# --- 8. The agent cancels -----------------------------------------------------------------------------------------


def test_an_agent_cancels_its_pending_proposal_and_the_approver_then_cannot_approve_it(crm_demo, agent_client):
    proposal = propose("5000.00")
    agent = agent_client("collections-agent")
    trail = Trail()

    response = agent.post(f"/api/v1/proposals/{proposal.pk}/cancel")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"
    assert refreshed(proposal).status == ProposalStatus.CANCELLED
    assert trail.new() == [("cancelled", "collections-agent", None)]
    assert AuditEvent.objects.get(proposal_id=proposal.pk, verb="cancelled").agent.slug == "collections-agent"

    with pytest.raises(InvalidTransition, match="already cancelled"):
        proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    assert refreshed(proposal).status == ProposalStatus.CANCELLED
    assert outbox_rows(proposal) == 0
    assert trail.new() == []

    again = agent.post(f"/api/v1/proposals/{proposal.pk}/cancel")
    assert again.status_code == 409
    assert again.json()["code"] == "invalid_state"
    assert agent.get(f"/api/v1/proposals/{proposal.pk}").json()["status"] == "cancelled"


# --- 9. A task delivered again ----------------------------------------------------------------------------------------


def test_a_task_delivered_again_is_counted_as_a_duplicate_and_one_that_finds_a_hold_is_not(demo, client, caplog):
    """A duplicate is no transition: no audit event, but a count on the proposal (shown in the admin), a WARNING line
    naming it, and the metric. A delivery that finds the proposal on hold is the kill switch at work, already
    audited when it took the proposal; one for a proposal still awaiting a decision is neither."""
    proposal = build(status=ProposalStatus.APPROVED)
    trail = Trail()
    assert proposal_claim(proposal_id=proposal.pk) is not None  # the first delivery takes it up

    caplog.set_level("INFO", logger="approvals.execution")
    while_running = proposal_execute(proposal_id=proposal.pk)
    assert (while_running.status, while_running.duplicate) == ("suppressed", True)
    assert "already executing under a live claim" in while_running.detail
    proposal_record_executed(proposal_id=proposal.pk, before={}, after=proposal.payload, compensation={})
    after_it = proposal_execute(proposal_id=proposal.pk)
    assert (after_it.status, after_it.duplicate, after_it.detail) == ("suppressed", True, "already executed")

    assert refreshed(proposal).duplicate_deliveries == 2
    assert trail.new() == [("executing", "gatehouse", None), ("executed", "gatehouse", None)]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and str(proposal.pk) in r.message]
    assert len(warnings) == 2 and all("duplicate delivery of proposal" in line for line in warnings), warnings
    assert warnings[1].endswith("already executed (duplicate 2)")

    held = build(status=ProposalStatus.ON_HOLD, held_from=ProposalStatus.APPROVED)
    waiting = build()
    for other, why in ((held, "on hold by the kill switch"), (waiting, "not approved for execution")):
        outcome = proposal_execute(proposal_id=other.pk)
        assert (outcome.status, outcome.duplicate) == ("suppressed", False) and why in outcome.detail
        assert refreshed(other).duplicate_deliveries == 0
        assert refreshed(other).status == other.status
    assert trail.new() == []

    client.force_login(user("admin"))
    page = client.get(reverse("admin:approvals_proposal_change", args=[proposal.pk])).content.decode()
    assert re.search(r"Duplicate deliveries:</label>\s*<div class=\"readonly\">2</div>", page), "not shown read-only"
