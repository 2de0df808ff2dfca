"""Cumulative limits, budgets, payload conditions and irreversible actions: what decide() adds to a band's amount."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from approvals import limits
from approvals.choices import DecisionMode, ProposalStatus
from approvals.decisions import proposal_reject
from approvals.models import Proposal
from approvals.policy import Impact, decide
from approvals.services import proposal_cancel
from audit.choices import Channel
from governance.choices import Access, CumulativeScope
from governance.models import ActionType, Agent, AgentBudget, ScopeGrant, System, ThresholdRule, validate_bands
from governance.services import threshold_rule_sign_off
from tests.factories import AgentFactory, ScopeGrantFactory, billing_world, propose, propose_credit_note

User = get_user_model()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def counting(rule: ThresholdRule, scope: str = CumulativeScope.RECORD, **terms) -> ThresholdRule:
    """The rule counting the agent's earlier proposals, signed off again by its owner."""
    rule.cumulative_scope = scope
    for name, value in terms.items():
        setattr(rule, name, value)
    rule.save()
    return threshold_rule_sign_off(rule=rule, user=User.objects.get(username="owner"), channel=Channel.COMMAND)


@pytest.fixture
def billing(demo):
    """billing_world (credit notes carry their amount: nothing to read), its rule counting per record over 24 h."""
    world = billing_world()
    counting(world.rule)
    return world


# --- Cumulative limits ------------------------------------------------------------------------------------------


def test_a_counting_rule_chooses_the_band_on_the_sum_of_the_agents_earlier_proposals_on_the_record(billing):
    first = propose_credit_note("300.00")
    second = propose_credit_note("300.00")
    assert first.mode == DecisionMode.AUTO
    assert second.mode == DecisionMode.SINGLE
    assert second.decision["reason"] == (
        "300.00 USD now + 300.00 USD (1 earlier proposal) in the last 24 h on invoice INV-1 = 600.00 USD falls in "
        "band 500.00–5000.00: One approver within the SLA of “Credit notes on billing”"
    )
    assert second.decision["counted"] == {
        "amount": "300.00",
        "proposals": 1,
        "window_seconds": 86400,
        "scope": "record",
    }
    assert second.impact_amount == Decimal("300.00")  # the proposal's own impact; the sum is the decision's


def test_a_rule_without_a_cumulative_scope_judges_each_proposal_alone(demo):
    billing_world()
    assert [propose_credit_note("300.00").mode for _ in range(3)] == [DecisionMode.AUTO] * 3


def test_record_scope_counts_only_the_same_record_and_system_scope_every_record(billing):
    propose_credit_note("300.00", record="INV-1")
    assert propose_credit_note("300.00", record="INV-2").mode == DecisionMode.AUTO
    counting(billing.rule, CumulativeScope.SYSTEM)
    third = propose_credit_note("300.00", record="INV-3")
    assert third.mode == DecisionMode.SINGLE
    assert "+ 600.00 USD (2 earlier proposals) in the last 24 h on any record of billing" in third.decision["reason"]


def test_rejected_and_cancelled_proposals_do_not_count_and_waiting_ones_do(billing):
    propose_credit_note("300.00")  # auto
    waiting = propose_credit_note("300.00")  # single: 600
    assert waiting.status == ProposalStatus.PENDING_APPROVAL
    assert propose_credit_note("100.00").decision["counted"]["amount"] == "600.00"  # the waiting one counts
    proposal_reject(proposal_id=waiting.pk, user=billing.approver, channel=Channel.ADMIN, reason="no")
    agent = Agent.objects.get(slug="collections-agent")
    cancelled = propose_credit_note("600.00")
    proposal_cancel(proposal_id=cancelled.pk, agent=agent, channel=Channel.API)
    # 300 (auto-approved) + 100 (waiting); the rejected 300 and the cancelled 600 changed nothing.
    assert propose_credit_note("10.00").decision["counted"] == {
        "amount": "400.00",
        "proposals": 2,
        "window_seconds": 86400,
        "scope": "record",
    }


def test_proposals_older_than_the_window_and_other_agents_proposals_do_not_count(billing):
    old = propose_credit_note("300.00")
    Proposal.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=25))
    other = AgentFactory(slug="other-agent")
    ScopeGrantFactory(agent=other, resource=billing.action.resource, access="write", actions=["credit_note"])
    assert propose(other, "credit_note", {"amount": "300.00"}, "INV-1", system="billing").mode == DecisionMode.AUTO
    assert propose_credit_note("300.00").mode == DecisionMode.AUTO
    counting(billing.rule, cumulative_window=timedelta(hours=26))
    assert propose_credit_note("1.00").decision["counted"]["proposals"] == 2  # the old one, and the last


def test_a_proposal_decided_again_counts_only_what_was_proposed_before_it(billing):
    first = propose_credit_note("300.00")
    second = propose_credit_note("300.00")
    third = propose_credit_note("300.00")  # after it: not counted when `second` is decided again
    now = timezone.now()
    for minutes, proposal in enumerate([third, second, first], start=1):  # apart, whatever the clock's resolution
        Proposal.objects.filter(pk=proposal.pk).update(created_at=now - timedelta(minutes=minutes))
    again = decide(
        system=billing.system,
        action=billing.action,
        impact=Impact(Decimal("300.00"), "USD", "test"),
        agent=second.agent,
        record_id="INV-1",
        payload=second.payload,
        exclude=second.pk,
    )
    assert again.counted == {"amount": "300.00", "proposals": 1, "window_seconds": 86400, "scope": "record"}
    assert first.mode == DecisionMode.AUTO and again.mode == DecisionMode.SINGLE


def test_a_system_default_rule_counts_the_actions_it_governs_only(billing):
    """The default rule of crm governs the actions without a rule of their own (add_note, send_statement), not the
    credit-limit raises its own rule judges."""
    crm = System.objects.get(slug="crm")
    rule = ThresholdRule.objects.get(system=crm, action_type=None)
    agent = Agent.objects.get(slug="collections-agent")
    Proposal.objects.create(
        agent=agent,
        system=crm,
        action_type=ActionType.objects.get(system=crm, name="update_credit_limit"),
        record_id="4471",
        payload={},
        status=ProposalStatus.EXECUTED,
        impact_amount=Decimal("900.00"),
        impact_currency="USD",
        mode=DecisionMode.SINGLE,
    )
    scope = limits.Scope(system=crm, agent=agent, action=ActionType.objects.get(system=crm, name="add_note"))
    rule.cumulative_scope = CumulativeScope.SYSTEM
    assert limits.earlier_for_rule(scope, rule) == limits.Counted(Decimal("0.00"), 0, timedelta(hours=24), "system")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_proposals_at_the_same_instant_do_not_both_see_the_small_sum(demo, monkeypatch):
    """Both count before either is recorded, unless the second waits for the first's commit: a slow count widens
    the window in which, without the lock, each would see the other's 300 missing."""
    billing_world()
    counting(ThresholdRule.objects.get(name="Credit notes on billing"))
    slow_sum = limits._sum

    def counted_slowly(*args, **kwargs):
        result = slow_sum(*args, **kwargs)
        threading.Event().wait(0.5)
        return result

    monkeypatch.setattr(limits, "_sum", counted_slowly)
    start, modes, errors = threading.Barrier(2), [], []

    def one() -> None:
        try:
            start.wait()
            modes.append(propose_credit_note("300.00").mode)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert sorted(modes) == [DecisionMode.AUTO, DecisionMode.SINGLE]


# --- Budgets ----------------------------------------------------------------------------------------------------


def budget(billing, **terms) -> AgentBudget:
    return AgentBudget.objects.create(agent=Agent.objects.get(slug="collections-agent"), system=billing.system, **terms)


def test_a_spent_write_budget_sends_what_would_auto_execute_to_one_approver(demo):
    world = billing_world()
    budget(world, max_writes=2)
    assert [propose_credit_note("10.00", record=f"INV-{n}").mode for n in range(2)] == [DecisionMode.AUTO] * 2
    third = propose_credit_note("10.00", record="INV-3")
    assert third.mode == DecisionMode.SINGLE and third.approver == world.approver
    assert third.decision["reason"] == (
        "10.00 USD falls in band 0.00–500.00: Auto-execute and log of “Credit notes on billing”, but "
        "collections-agent's budget on billing is spent: 2 of 2 writes in the last 24 h: one approver decides"
    )


def test_a_budget_in_money_counts_the_sum_and_leaves_larger_proposals_to_their_band(demo):
    world = billing_world()
    budget(world, max_amount=Decimal("1000.00"))
    assert propose_credit_note("400.00", record="A").mode == DecisionMode.AUTO
    assert propose_credit_note("3000.00", record="B").mode == DecisionMode.SINGLE  # its band's approver anyway
    over = propose_credit_note("100.00", record="C")
    assert over.mode == DecisionMode.SINGLE
    assert "budget on billing is spent: 3400.00 of 1000.00 USD used in the last 24 h" in over.decision["reason"]
    assert propose_credit_note("6000.00", record="D").mode == DecisionMode.DUAL  # nothing else changes
    (use,) = limits.budgets_of(Agent.objects.get(slug="collections-agent"))
    assert (use.amount, use.amount_left, use.writes, use.writes_left) == (
        Decimal("9500.00"),
        Decimal("0.00"),
        4,
        None,
    )


# --- Irreversible actions ---------------------------------------------------------------------------------------


def decide_statement(crm: System) -> object:
    action = ActionType.objects.get(system=crm, name="send_statement")
    return decide(system=crm, action=action, impact=Impact(Decimal("0.00"), "USD", "none"), record_id="4471")


def test_an_action_that_cannot_be_reversed_never_auto_executes_unless_its_rule_says_so(demo):
    crm = System.objects.get(slug="crm")
    decision = decide_statement(crm)
    assert decision.mode == DecisionMode.SINGLE
    assert decision.approver == User.objects.get(username="approver")
    assert decision.reason == (
        "0.00 USD falls in band 0.00–500.00: Auto-execute and log of “Default for crm”, but send_statement cannot be "
        "reversed: A statement e-mail that has been sent cannot be unsent; the rule does not let such a write execute "
        "without a person: one approver decides"
    )
    rule = ThresholdRule.objects.get(system=crm, action_type=None)
    rule.auto_executes_irreversible = True
    rule.save()
    assert not rule.is_signed_off  # the choice is part of what the owner signs
    threshold_rule_sign_off(rule=rule, user=User.objects.get(username="owner"), channel=Channel.COMMAND)
    assert decide_statement(crm).mode == DecisionMode.AUTO


# --- Payload conditions -----------------------------------------------------------------------------------------


def decide_status(status: str):
    crm = System.objects.get(slug="crm")
    action = ActionType.objects.get(system=crm, name="set_status")
    impact = Impact(Decimal("0.00"), "USD", "none")
    return decide(system=crm, action=action, impact=impact, record_id="4471", payload={"status": status})


def test_closing_an_account_needs_two_people_and_any_other_status_one(demo):
    closed, active = decide_status("closed"), decide_status("active")
    assert closed.mode == DecisionMode.DUAL and closed.review_group.name == "Reviewers"
    assert 'when status is "closed"' in closed.reason
    assert active.mode == DecisionMode.SINGLE
    assert active.approver == User.objects.get(username="approver")


def test_overlapping_bands_are_allowed_only_across_different_conditions(demo):
    rule = ThresholdRule.objects.get(name="Status changes on crm")
    action = rule.action_type
    specs = [band.spec() for band in rule.bands.all()]
    validate_bands(specs, action=action)  # the demo's: [0, ∞) single, and [0, ∞) dual when closed
    closed = next(spec for spec in specs if spec.condition)
    with pytest.raises(ValidationError, match="overlap"):
        validate_bands([*specs, closed], action=action)


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        ({"colour": "red"}, "set_status's payload has no field 'colour'"),
        ({"status": "gone"}, 'status is never "gone": it is one of "active", "on_hold", "closed"'),
        ({"status": ["closed"]}, "must be one value"),
    ],
)
def test_a_condition_names_fields_and_values_of_the_actions_payload(demo, condition, problem):
    rule = ThresholdRule.objects.get(name="Status changes on crm")
    band = rule.bands.get(condition={})
    band.condition = condition
    with pytest.raises(ValidationError, match=problem.replace("(", r"\(")):
        band.full_clean()
    with pytest.raises(ValidationError, match="Only a rule for one action"):
        validate_bands([band.spec()], action=None)


def test_every_new_term_is_covered_by_the_sign_off(demo):
    rule = ThresholdRule.objects.get(name="Credit limit changes on crm")
    assert rule.is_signed_off
    for name, value in [
        ("cumulative_scope", CumulativeScope.SYSTEM),
        ("cumulative_window", timedelta(hours=12)),
        ("auto_executes_irreversible", True),
    ]:
        edited = ThresholdRule.objects.get(pk=rule.pk)
        setattr(edited, name, value)
        assert not edited.is_signed_off, name
    band = ThresholdRule.objects.get(name="Status changes on crm").bands.get(condition={"status": "closed"})
    band.condition = {"status": "on_hold"}
    band.save()
    assert not ThresholdRule.objects.get(name="Status changes on crm").is_signed_off


# --- Done when: twenty $300 raises on account 4471 in an hour, over HTTP, with the real CRM and a worker ---------


@pytest.mark.slow
def test_twenty_300_dollar_raises_on_one_account_are_judged_as_the_6000_they_add_up_to(live):
    """The agent reads the account and proposes its limit plus $300, twenty times. The first executes alone; from the
    second the day's sum passes $500 and the approver decides; from the seventeenth it passes $5,000 and a second
    reviewer looks too. Each raise's own impact stays $300: the limit it proposes minus the one the CRM holds."""
    agent = live.agent()
    modes, impacts = [], []
    for _ in range(20):
        current = Decimal(agent.get("/api/v1/systems/crm/accounts/4471").json()["data"]["credit_limit"])
        response = agent.post(
            "/api/v1/proposals",
            json={
                "system": "crm",
                "action": "update_credit_limit",
                "record_id": "4471",
                "payload": {"credit_limit": f"{current + 300:.2f}"},
                "reason": "another step",
            },
        )
        assert response.status_code == 201, response.text
        body = response.json()
        modes.append(body["decision"]["mode"])
        impacts.append(body["impact"]["amount"])
        if body["decision"]["mode"] == "auto":
            live.wait_for(body["id"], "executed")
    assert modes == ["auto"] + ["single"] * 15 + ["dual"] * 4
    assert impacts == ["300.00"] * 20
    assert live.crm_account("4471")["credit_limit"] == "2300.00"  # only the first was written
    last = Proposal.objects.filter(record_id="4471").order_by("-created_at").first()
    assert last.status == ProposalStatus.PENDING_APPROVAL
    assert last.decision["reason"] == (
        "300.00 USD now + 5700.00 USD (19 earlier proposals) in the last 24 h on account 4471 = 6000.00 USD falls in "
        "band 5000.00–∞: Named approver plus a second reviewer of “Credit limit changes on crm”"
    )
    assert body["decision"]["reason"] == last.decision["reason"]  # the agent is told why, in the same words


# --- Budgets: who sets them, where they show ------------------------------------------------------------------


def test_a_budget_is_set_by_the_agents_owner_only_and_the_change_is_in_the_trail(demo):
    from django.core.exceptions import PermissionDenied

    from audit.models import AuditEvent
    from governance.services import agent_budget_save

    agent = Agent.objects.get(slug="collections-agent")
    crm = System.objects.get(slug="crm")
    with pytest.raises(PermissionDenied):
        agent_budget_save(
            budget=AgentBudget(agent=agent, system=crm, max_writes=5),
            user=User.objects.get(username="approver"),
            channel=Channel.ADMIN,
        )
    agent_budget_save(
        budget=AgentBudget(agent=agent, system=crm, max_writes=5),
        user=User.objects.get(username="owner"),
        channel=Channel.ADMIN,
    )
    event = AuditEvent.objects.get(verb="configured", agent=agent)
    assert event.state_after["max_writes"] == "5" and event.state_before["max_writes"] is None
    assert "owner set the budget of agent collections-agent on crm" in event.summary


def test_the_agent_sees_its_budgets_and_cumulative_rules_in_me(demo, agent_client):
    world = billing_world()
    budget(world, max_amount=Decimal("1000.00"), max_writes=10)
    propose_credit_note("400.00")
    body = agent_client().get("/api/v1/me").json()
    assert body["budgets"] == [
        {
            "system": "billing",
            "window_seconds": 86400,
            "currency": "USD",
            "max_amount": "1000.00",
            "used_amount": "400.00",
            "left_amount": "600.00",
            "max_writes": 10,
            "used_writes": 1,
            "left_writes": 9,
        }
    ]
    assert body["cumulative_rules"] == [
        {
            "system": "crm",
            "rule": "Credit limit changes on crm",
            "actions": ["update_credit_limit"],
            "scope": "record",
            "window_seconds": 86400,
        }
    ]
    assert body["grants"]  # the fields it had stay


def test_the_agents_page_shows_each_budget_and_the_rules_page_what_a_sign_off_puts_in_force(demo, client):
    world = billing_world()
    budget(world, max_writes=3)
    propose_credit_note("10.00")
    client.force_login(User.objects.get(username="owner"))
    agent = Agent.objects.get(slug="collections-agent")
    page = client.get(f"/admin/governance/agent/{agent.pk}/change/").content.decode()
    assert "1 of 3 writes used, 2 left (in the last 24 h)" in page
    rule = ThresholdRule.objects.get(name="Default for crm")
    page = client.get(f"/admin/governance/thresholdrule/{rule.pk}/change/").content.decode()
    assert "a write that cannot be reversed always waits for a person, whatever its band" in page
    rule = ThresholdRule.objects.get(name="Credit limit changes on crm")
    page = client.get(f"/admin/governance/thresholdrule/{rule.pk}/change/").content.decode()
    assert "the agent&#x27;s standing proposals on the same record in the last 24 h count" in page


def test_me_hides_a_budgets_sum_of_impacts_the_agent_no_longer_may_read_though_its_write_grant_is_gone(
    crm_demo, agent_client
):
    """The sum holds the impacts of earlier proposals whatever grants stand now: a withdrawn write grant does not
    make the amounts it was computed from readable."""
    agent = Agent.objects.get(slug="collections-agent")
    crm = System.objects.get(slug="crm")
    AgentBudget.objects.create(agent=agent, system=crm, max_amount=Decimal("10000.00"))
    propose("collections-agent", "update_credit_limit", {"credit_limit": "2300.00"}, "4471", reason="")
    grants = ScopeGrant.objects.filter(agent=agent, system=crm)
    grants.filter(access=Access.WRITE).delete()
    for grant in grants.filter(access=Access.READ):
        grant.fields = [name for name in grant.fields if name != "credit_limit"]
        grant.save()

    (crm_budget,) = [b for b in agent_client().get("/api/v1/me").json()["budgets"] if b["system"] == "crm"]

    assert crm_budget["used_amount"] is None and crm_budget["left_amount"] is None
    assert crm_budget["used_writes"] == 1
