"""The decision policy (impact, rule, band; fail closed) and who may decide a proposal, on the demo inventory."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from approvals.choices import DecisionMode, ProposalStatus
from approvals.decisions import NotYourDecision, may_decide, proposal_approve
from approvals.models import OutboxMessage, Proposal
from approvals.policy import Impact, compute_impact, decide
from approvals.transitions import InvalidTransition
from audit.models import AuditEvent
from governance.choices import ImpactKind, Role, WriteMode
from governance.models import ActionType, Agent, System, ThresholdRule
from governance.services import threshold_rule_sign_off

User = get_user_model()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """seed_demo sets six passwords per test; the default hasher would make that most of the module's runtime."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def crm(demo) -> System:
    return System.objects.get(slug="crm")


@pytest.fixture
def credit_limit(crm) -> ActionType:
    return ActionType.objects.get(system=crm, name="update_credit_limit")


def usd(amount: str) -> Impact:
    return Impact(Decimal(amount), "USD", "given by the test")


def decide_raise(system: System, action: ActionType, current: str, new: str):
    impact = compute_impact(action, {"credit_limit": new}, {"credit_limit": current})
    return impact, decide(system=system, action=action, impact=impact)


def assert_a_human_decides(decision, reason_part: str) -> None:
    assert decision.mode == DecisionMode.SINGLE
    assert decision.approver is None
    assert decision.approver_group == Group.objects.get(name=Role.APPROVERS)
    assert decision.sla == settings.GATEHOUSE_FALLBACK_SLA
    assert decision.rule is None and decision.band is None
    assert reason_part in decision.reason
    assert decision.reason.endswith("a human decides")


# --- Impact -----------------------------------------------------------------------------------------------------


def test_delta_impact_is_the_new_value_minus_the_current_one(credit_limit):
    impact = compute_impact(credit_limit, {"credit_limit": "2300.00"}, {"credit_limit": "2000.00"})
    assert impact.amount == Decimal("300.00")
    assert impact.currency == "USD"
    assert impact.as_json() == {"amount": "300.00", "currency": "USD"}


def test_a_decrease_is_judged_by_its_size(crm, credit_limit):
    impact, decision = decide_raise(crm, credit_limit, current="7000.00", new="1000.00")
    assert impact.amount == Decimal("-6000.00")
    assert decision.mode == DecisionMode.DUAL
    assert decision.approver.username == "approver"
    assert decision.review_group.name == Role.REVIEWERS


def test_amount_impact_is_the_amount_in_the_payload_whatever_the_record_says(crm, credit_limit):
    refund = ActionType.objects.create(
        system=crm,
        resource=credit_limit.resource,
        name="refund",
        payload_schema={
            "type": "object",
            "properties": {"amount": {"type": "string"}},
            "required": ["amount"],
            "additionalProperties": False,
        },
        impact_kind=ImpactKind.AMOUNT,
        impact_field="amount",
    )
    impact = compute_impact(refund, {"amount": "750.00"}, {"amount": "99999"})
    assert impact.amount == Decimal("750.00")
    decision = decide(system=crm, action=refund, impact=impact)  # the system's default rule
    assert decision.mode == DecisionMode.SINGLE
    assert decision.rule.name == "Default for crm"


def test_an_action_without_money_at_stake_has_impact_zero_and_is_auto(crm):
    add_note = ActionType.objects.get(system=crm, name="add_note")
    assert add_note.impact_kind == ImpactKind.NONE
    impact = compute_impact(add_note, {"text": "Called them."}, None)
    assert impact.amount == Decimal("0.00")
    decision = decide(system=crm, action=add_note, impact=impact)
    assert decision.mode == DecisionMode.AUTO
    assert decision.rule.name == "Default for crm"


# --- Bands ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "mode"),
    [
        ("0.00", DecisionMode.AUTO),
        ("499.99", DecisionMode.AUTO),
        ("500.00", DecisionMode.SINGLE),
        ("4999.99", DecisionMode.SINGLE),
        ("5000.00", DecisionMode.DUAL),
        ("1000000.00", DecisionMode.DUAL),
    ],
)
def test_band_edges_include_the_lower_bound_and_exclude_the_upper(crm, credit_limit, amount, mode):
    decision = decide(system=crm, action=credit_limit, impact=usd(amount))
    assert decision.mode == mode
    assert decision.rule.name == "Credit limit changes on crm"
    assert f"{Decimal(amount)} USD falls in band" in decision.reason


def test_a_single_band_names_the_approver_and_the_sla(crm, credit_limit):
    decision = decide(system=crm, action=credit_limit, impact=usd("3000.00"))
    assert decision.approver.username == "approver"
    assert decision.sla == timedelta(hours=4)
    assert decision.review_group is None


# --- Fail closed ------------------------------------------------------------------------------------------------


def test_no_rule_means_one_approver_from_the_approvers_group_within_the_fallback_sla(crm, credit_limit):
    ThresholdRule.objects.filter(system=crm).delete()
    decision = decide(system=crm, action=credit_limit, impact=usd("1.00"))
    assert_a_human_decides(decision, "no threshold rule covers update_credit_limit")


def test_a_rule_edited_after_sign_off_no_longer_decides(crm, credit_limit):
    rule = ThresholdRule.objects.get(system=crm, action_type=credit_limit)
    assert rule.is_signed_off
    auto_band = rule.bands.get(mode=DecisionMode.AUTO)
    auto_band.max_amount = Decimal("499.00")  # an edit the owner did not sign
    auto_band.save()
    next_band = rule.bands.get(mode=DecisionMode.SINGLE)
    next_band.min_amount = Decimal("499.00")
    next_band.save()
    assert not ThresholdRule.objects.get(pk=rule.pk).is_signed_off

    decision = decide(system=crm, action=credit_limit, impact=usd("10.00"))
    assert_a_human_decides(decision, "is not signed off by the business owner")
    assert decision.max_age == rule.max_age


def test_an_impact_in_another_currency_than_the_rule_goes_to_a_human(crm, credit_limit):
    credit_limit.impact_currency = "EUR"
    credit_limit.save()
    impact = compute_impact(credit_limit, {"credit_limit": "2001.00"}, {"credit_limit": "2000.00"})
    assert impact.currency == "EUR"
    decision = decide(system=crm, action=credit_limit, impact=impact)
    assert_a_human_decides(decision, "impact in EUR but rule")


@pytest.mark.parametrize(
    ("payload", "record", "basis"),
    [
        ({"credit_limit": "2300.00"}, {"name": "Northwind"}, "the current credit_limit could not be read"),
        ({"credit_limit": "2300.00"}, None, "the current credit_limit could not be read"),
        ({"credit_limit": "2300.00"}, {"credit_limit": "lots"}, "the current credit_limit could not be read"),
        ({"credit_limit": "NaN"}, {"credit_limit": "2000.00"}, "credit_limit is not a number"),
        ({"credit_limit": True}, {"credit_limit": "2000.00"}, "credit_limit is not a number"),
        ({}, {"credit_limit": "2000.00"}, "credit_limit is not a number"),
    ],
)
def test_an_impact_that_cannot_be_computed_goes_to_a_human(crm, credit_limit, payload, record, basis):
    impact = compute_impact(credit_limit, payload, record)
    assert impact.amount is None
    assert impact.as_json()["amount"] is None
    decision = decide(system=crm, action=credit_limit, impact=impact)
    assert_a_human_decides(decision, f"the impact could not be computed ({basis})")


def test_a_propose_only_system_never_auto_executes(crm, credit_limit):
    crm.write_mode = WriteMode.PROPOSE_ONLY
    crm.save()
    decision = decide(system=crm, action=credit_limit, impact=usd("300.00"))
    assert_a_human_decides(decision, "but crm is propose-only")


def test_a_propose_only_system_keeps_the_band_for_larger_amounts(crm, credit_limit):
    crm.write_mode = WriteMode.PROPOSE_ONLY
    crm.save()
    decision = decide(system=crm, action=credit_limit, impact=usd("3000.00"))
    assert decision.mode == DecisionMode.SINGLE
    assert decision.approver.username == "approver"


# --- Who may decide ---------------------------------------------------------------------------------------------


@pytest.fixture
def users(demo) -> dict[str, object]:
    return {user.username: user for user in User.objects.all()}


@pytest.fixture
def proposal(crm, credit_limit, users) -> Proposal:
    """A $3,000 raise waiting for the named approver, built as proposal_create would leave it."""
    rule = ThresholdRule.objects.get(system=crm, action_type=credit_limit)
    return Proposal.objects.create(
        agent=Agent.objects.get(slug="collections-agent"),
        system=crm,
        action_type=credit_limit,
        record_id="4471",
        payload={"credit_limit": "5000.00"},
        status=ProposalStatus.PENDING_APPROVAL,
        channel="api",
        impact_amount=Decimal("3000.00"),
        impact_currency="USD",
        mode=DecisionMode.SINGLE,
        rule=rule,
        approver=users["approver"],
    )


def test_the_named_approver_may_decide(proposal, users):
    assert may_decide(users["approver"], proposal) is None


def test_another_user_than_the_named_approver_may_not_decide(proposal, users):
    users["reviewer"].groups.add(Group.objects.get(name=Role.APPROVERS))  # even a member of the Approvers
    assert may_decide(users["reviewer"], proposal) == "it is assigned to approver"
    assert "assigned to approver" in may_decide(users["admin"], proposal)  # even a superuser


def test_an_inactive_approver_may_not_decide(proposal, users):
    users["approver"].is_active = False
    assert may_decide(users["approver"], proposal) == "your account is inactive"


def test_a_member_of_the_approver_group_may_decide_when_no_one_is_named(proposal, users):
    proposal.approver = None
    proposal.approver_group = Group.objects.get(name=Role.APPROVERS)
    proposal.save()
    assert may_decide(users["approver"], proposal) is None
    assert may_decide(users["reviewer"], proposal) == "you are not in the Approvers group"


def test_a_proposal_with_no_approver_at_all_cannot_be_decided(proposal, users):
    proposal.approver = None
    proposal.save()
    assert may_decide(users["approver"], proposal) == "no approver is assigned"


def test_the_agents_owner_may_not_approve_its_proposals_when_the_rule_says_so(proposal, users):
    owner = users["owner"]
    assert proposal.agent.owner == owner
    proposal.approver = owner
    proposal.save()
    assert proposal.rule.owner_may_not_approve
    assert may_decide(owner, proposal) == "you own the agent collections-agent (separation of duties)"

    proposal.approver = None
    proposal.approver_group = Group.objects.get(name=Role.APPROVERS)
    proposal.save()
    owner.groups.add(proposal.approver_group)
    assert "separation of duties" in may_decide(owner, proposal)

    proposal.rule = None  # no rule: fail closed, the owner still may not
    assert "separation of duties" in may_decide(owner, proposal)


def test_the_agents_owner_may_approve_where_the_rule_allowed_it_when_the_proposal_was_decided(proposal, users):
    proposal.approver = users["owner"]
    proposal.decision = {"owner_may_not_approve": False, "rule_edited_by": None}
    assert may_decide(users["owner"], proposal) is None


def test_turning_owner_may_not_approve_off_later_does_not_let_the_owner_decide_a_waiting_proposal(proposal, users):
    """The rule version a proposal was decided under judges it: a later edit of the live rule changes nothing."""
    proposal.approver = users["owner"]
    proposal.decision = {"owner_may_not_approve": True, "rule_edited_by": None}
    proposal.rule.owner_may_not_approve = False
    proposal.rule.save()
    assert may_decide(users["owner"], proposal) == "you own the agent collections-agent (separation of duties)"


def test_whoever_last_edited_the_rule_may_not_decide_what_it_decided(proposal, users):
    proposal.decision = {"owner_may_not_approve": True, "rule_edited_by": users["approver"].pk, "rule": "Limits"}
    assert "you made the last change to the rule “Limits”" in may_decide(users["approver"], proposal)


def test_a_new_proposal_keeps_the_rules_separation_of_duties_terms_as_they_were(crm, credit_limit, users):
    rule = ThresholdRule.objects.get(system=crm, action_type=credit_limit)
    ThresholdRule.objects.filter(pk=rule.pk).update(edited_by=users["approver"], owner_may_not_approve=False)
    threshold_rule_sign_off(rule=rule, user=users["owner"], channel="admin")  # the edit voided the sign-off
    _, decision = decide_raise(crm, credit_limit, current="2000.00", new="3000.00")
    assert decision.rule is not None
    assert decision.as_json()["owner_may_not_approve"] is False
    assert decision.as_json()["rule_edited_by"] == users["approver"].pk


# --- Approving --------------------------------------------------------------------------------------------------


def test_approving_twice_is_refused_the_second_time(proposal, users):
    approved = proposal_approve(proposal_id=proposal.pk, user=users["approver"], channel="admin", comment="ok")
    assert approved.status == ProposalStatus.APPROVED
    assert approved.decided_by == users["approver"]
    assert OutboxMessage.objects.filter(proposal=proposal).count() == 1

    with pytest.raises(InvalidTransition, match="already approved"):
        proposal_approve(proposal_id=proposal.pk, user=users["approver"], channel="admin")
    assert AuditEvent.objects.filter(proposal_id=proposal.pk, verb="approved").count() == 1
    assert OutboxMessage.objects.filter(proposal=proposal).count() == 1


def test_approving_someone_elses_proposal_is_refused_and_audited_as_denied(proposal, users):
    with pytest.raises(NotYourDecision, match="assigned to approver"):
        proposal_approve(proposal_id=proposal.pk, user=users["reviewer"], channel="admin")

    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.PENDING_APPROVAL
    assert proposal.decided_by is None
    assert not OutboxMessage.objects.filter(proposal=proposal).exists()
    denied = AuditEvent.objects.get(proposal_id=proposal.pk, verb="denied")
    assert denied.actor == "reviewer"
    assert denied.outcome == "not_your_decision"
    assert "reviewer may not approve this proposal" in denied.summary
    assert not AuditEvent.objects.filter(proposal_id=proposal.pk, verb="approved").exists()


def test_a_propose_only_approval_becomes_a_manual_task_and_queues_nothing(proposal, users, crm):
    crm.write_mode = WriteMode.PROPOSE_ONLY
    crm.save()
    approved = proposal_approve(proposal_id=proposal.pk, user=users["approver"], channel="admin")
    assert approved.status == ProposalStatus.MANUAL_TASK
    assert not OutboxMessage.objects.filter(proposal=proposal).exists()
