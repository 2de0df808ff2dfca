"""Progressive autonomy: the agent's record per band over a window, and the threshold changes it suggests.

Proposals are made and decided through the services (proposal_create decides the band with the real policy); volume
is cloned from a real proposal with bulk_create, so every row carries the band exactly as the policy recorded it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from approvals.autonomy import autonomy_report
from approvals.autonomy_records import FALLBACK_LABEL, SuggestionKind, round_down
from approvals.choices import DecisionMode, ProposalStatus, ReviewOutcome
from approvals.decisions import proposal_approve, proposal_reject, proposal_review, proposals_escalate_and_expire
from approvals.execution import proposal_claim, proposal_record_executed, proposal_record_failure
from approvals.models import Proposal
from approvals.services import ProposalRequest, proposal_cancel, proposal_create
from audit.choices import Channel, Verb
from audit.services import audit_record
from governance.choices import Access, ImpactKind
from governance.models import ThresholdBand
from tests.factories import (
    ActionTypeFactory,
    ScopeGrantFactory,
    UserFactory,
    billing_world,
)
from tests.factories import propose_credit_note as propose

User = get_user_model()

RULE = "Credit notes on billing"
AUTO_BAND = "0.00–500.00: Auto-execute and log"
SINGLE_BAND = "500.00–5000.00: One approver within the SLA"
DUAL_BAND = "5000.00–∞: Named approver plus a second reviewer"


# --- Helpers ----------------------------------------------------------------------------------------------------


@pytest.fixture
def billing(demo):
    """A billing system with credit notes decided by amount (tests.factories.billing_world)."""
    return billing_world(rule_name=RULE)


def approve(proposal: Proposal) -> Proposal:
    return proposal_approve(proposal_id=proposal.pk, user=User.objects.get(username="approver"), channel=Channel.ADMIN)


def reject(proposal: Proposal) -> Proposal:
    return proposal_reject(
        proposal_id=proposal.pk, user=User.objects.get(username="approver"), channel=Channel.ADMIN, reason="No."
    )


def timed(proposal: Proposal, *, created_ago: timedelta, took: timedelta | None = None, **fields) -> None:
    """Move a proposal in time: made `created_ago` before now, decided `took` after that. (Proposals keep no
    history, and this stands in for the clock passing, not for a transition.)"""
    created_at = timezone.now() - created_ago
    if took is not None:
        fields["decided_at"] = created_at + took
    Proposal.objects.filter(pk=proposal.pk).update(created_at=created_at, **fields)


def clone(template: Proposal, count: int, *, created_ago: timedelta = timedelta(hours=3), **fields) -> list[Proposal]:
    """`count` copies of a proposal the services made (same rule, band, mode), with `fields` changed."""
    copied = [field.attname for field in Proposal._meta.concrete_fields if field.attname != "id"]
    rows = [
        Proposal(**{**{name: getattr(template, name) for name in copied}, "record_id": f"INV-{n}", **fields})
        for n in range(count)
    ]
    Proposal.objects.bulk_create(rows)
    created_at = timezone.now() - created_ago
    Proposal.objects.filter(pk__in=[row.pk for row in rows]).update(
        created_at=created_at, decided_at=created_at + timedelta(minutes=30)
    )
    return rows


def approved_in_single_band(count: int, *, impact: str = "1200.00", created_ago=timedelta(hours=3)) -> list[Proposal]:
    """`count` proposals in the one-approver band, each approved by a person: one through the services, the rest
    cloned from it."""
    first = approve(propose(impact))
    timed(first, created_ago=created_ago, took=timedelta(minutes=30))
    return [first, *clone(first, count - 1, created_ago=created_ago)] if count > 1 else [first]


def band(report, label: str):
    rows = [row for row in report.bands if row.band == label]
    assert len(rows) == 1, [row.band for row in report.bands]
    return rows[0]


def kinds(report) -> list[str]:
    return [suggestion.kind for suggestion in report.suggestions]


# --- The numbers --------------------------------------------------------------------------------------------------


def test_the_band_recorded_on_each_proposal_is_the_rule_band_as_text(billing):
    proposal = propose("1000.00")
    assert proposal.decision["band"] == SINGLE_BAND
    assert str(ThresholdBand.objects.get(rule=billing.rule, min_amount=500)) == SINGLE_BAND


def test_counts_rates_and_medians_per_band_are_exact(billing):
    for _ in range(3):
        propose("100.00")
    single = [propose("1000.00") for _ in range(4)]
    for proposal in single[:3]:
        approve(proposal)
    reject(single[3])
    for proposal, minutes in zip(single, [10, 20, 30, 50], strict=True):
        timed(proposal, created_ago=timedelta(hours=2), took=timedelta(minutes=minutes))
    dual = approve(propose("6000.00"))
    timed(dual, created_ago=timedelta(hours=3), took=timedelta(minutes=90))

    report = autonomy_report(billing.agent)

    assert [(row.rule_name, row.band) for row in report.bands] == [
        (RULE, AUTO_BAND),
        (RULE, SINGLE_BAND),
        (RULE, DUAL_BAND),
    ]
    auto = band(report, AUTO_BAND)
    assert (auto.proposed, auto.auto_approved, auto.decided_by_people) == (3, 3, 0)
    assert auto.approval_rate is None and auto.median_time_to_decision is None
    one = band(report, SINGLE_BAND)
    assert (one.proposed, one.decided_by_people, one.approved, one.rejected) == (4, 4, 3, 1)
    assert (one.approval_rate, one.rejection_rate) == (0.75, 0.25)
    assert one.median_time_to_decision == timedelta(minutes=25)  # (20 + 30) / 2
    assert (one.approval_rate_text, one.rejection_rate_text, one.median_text) == ("75%", "25%", "25 min")
    assert one.largest_approved_impact == Decimal("1000.00")
    two = band(report, DUAL_BAND)
    assert (two.decided_by_people, two.approved, two.median_time_to_decision) == (1, 1, timedelta(minutes=90))
    totals = report.totals
    assert (totals.proposed, totals.auto_approved, totals.decided_by_people, totals.approved) == (8, 3, 5, 4)
    assert totals.rejection_rate == 0.2
    assert totals.median_time_to_decision == timedelta(minutes=30)  # 10, 20, 30, 50, 90
    assert report.suggestions == ()


def test_sla_breaches_are_escalations_late_decisions_and_overdue_waits(billing):
    withdrawn, escalated, late, overdue, in_time = (propose("1000.00") for _ in range(5))
    Proposal.objects.filter(pk__in=[withdrawn.pk, escalated.pk]).update(
        sla_due_at=timezone.now() - timedelta(minutes=1)
    )
    assert proposals_escalate_and_expire() == (2, 0)
    proposal_cancel(proposal_id=withdrawn.pk, agent=billing.agent, channel=Channel.API)  # only its audit event tells
    approve(escalated)  # escalated, then decided after its SLA: one breach, not two
    approve(late)
    Proposal.objects.filter(pk=late.pk).update(sla_due_at=timezone.now() - timedelta(hours=1))
    Proposal.objects.filter(pk=overdue.pk).update(sla_due_at=timezone.now() - timedelta(minutes=5))
    approve(in_time)
    propose("100.00")  # auto: no SLA at all

    report = autonomy_report(billing.agent)

    single = band(report, SINGLE_BAND)
    assert (single.sla_breaches, single.awaiting, single.cancelled, single.decided_by_people) == (4, 1, 1, 3)
    assert band(report, AUTO_BAND).sla_breaches == 0


def test_failures_reversals_and_flags_are_counted_and_suggest_tightening(billing):
    failed = propose("100.00")
    assert proposal_claim(proposal_id=failed.pk) is not None
    proposal_record_failure(proposal_id=failed.pk, reason="CRM said 500")
    Proposal.objects.filter(pk=propose("120.00").pk).update(status=ProposalStatus.REVERSED)
    reversed_by_audit = propose("130.00")
    audit_record(
        verb=Verb.REVERSED, channel=Channel.TASK, proposal_id=reversed_by_audit.pk, summary="Reversed by the test."
    )
    single_failed = approve(propose("1000.00"))
    assert proposal_claim(proposal_id=single_failed.pk) is not None
    proposal_record_failure(proposal_id=single_failed.pk, reason="timeout")
    dual = approve(propose("6000.00"))
    assert proposal_claim(proposal_id=dual.pk) is not None
    proposal_record_executed(proposal_id=dual.pk, before={"amount": "0"}, after={"amount": "6000.00"}, compensation={})
    proposal_review(proposal_id=dual.pk, user=billing.reviewer, channel=Channel.ADMIN, flag=True, comment="Too much.")

    report = autonomy_report(billing.agent)

    auto = band(report, AUTO_BAND)
    assert (auto.failed, auto.reversed, auto.flagged) == (1, 2, 0)
    assert band(report, SINGLE_BAND).failed == 1
    assert band(report, DUAL_BAND).flagged == 1
    texts = {suggestion.text: suggestion for suggestion in report.suggestions}
    lower = texts[
        f"Consider lowering the auto-approve limit of “{RULE}” from 500.00 USD to 250.00 USD: proposals just "
        "under the limit go through unchecked."
    ]
    assert lower.kind == SuggestionKind.TIGHTEN
    assert (lower.current_limit, lower.suggested_limit) == (Decimal("500.00"), Decimal("250"))
    assert lower.evidence == (
        f"among the proposals in band {AUTO_BAND} of “{RULE}” in the last 30 days, 1 failed and 2 were reversed",
    )
    assert f"Consider requiring a second reviewer (dual approval) in band {SINGLE_BAND} of “{RULE}”." in texts
    assert kinds(report) == [SuggestionKind.TIGHTEN, SuggestionKind.TIGHTEN, SuggestionKind.REVIEW]
    assert SuggestionKind.RAISE not in kinds(report)


# --- Raising ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("impact", "limit"),
    [
        ("1200.00", Decimal("1000")),  # capped at twice the current limit
        ("730.55", Decimal("730")),  # no further than the largest impact people approved, rounded down
    ],
)
def test_a_hundred_decisions_without_a_rejection_suggest_raising_the_auto_approve_limit(billing, impact, limit):
    approved_in_single_band(112, impact=impact)

    report = autonomy_report(billing.agent)

    assert band(report, SINGLE_BAND).rejection_rate == 0.0
    (suggestion,) = report.suggestions
    assert suggestion.kind == SuggestionKind.RAISE
    assert suggestion.text == (
        f"Consider raising the auto-approve limit of “{RULE}” from 500.00 USD to {limit:,.2f} USD."
    )
    assert (suggestion.current_limit, suggestion.suggested_limit) == (Decimal("500.00"), limit)
    assert suggestion.rule_id == billing.rule.pk and suggestion.band == AUTO_BAND
    assert suggestion.evidence[0] == (
        f"no rejection in 112 proposals decided by people in the last 30 days (in band {SINGLE_BAND} of “{RULE}”)"
    )
    assert "people took a median of 30 min to decide each" in suggestion.evidence


def test_ninety_nine_decisions_are_not_enough_to_suggest_a_raise(billing):
    approved_in_single_band(99)
    assert autonomy_report(billing.agent).suggestions == ()


def test_a_single_rejection_among_a_hundred_decisions_stops_the_raise_without_tightening(billing):
    approved_in_single_band(100)
    reject(propose("1200.00"))

    report = autonomy_report(billing.agent)

    assert band(report, SINGLE_BAND).decided_by_people == 101
    assert report.suggestions == ()


def test_a_failure_in_the_auto_band_stops_the_raise_above_it(billing):
    approved_in_single_band(100)
    failed = propose("100.00")
    proposal_claim(proposal_id=failed.pk)
    proposal_record_failure(proposal_id=failed.pk, reason="CRM said 500")

    assert kinds(autonomy_report(billing.agent)) == [SuggestionKind.TIGHTEN]


def test_a_hundred_clean_dual_approvals_suggest_dropping_the_second_reviewer_but_no_raise(billing):
    first = approve(propose("6000.00"))
    clone(first, 99, reviewed_by=billing.reviewer, review_outcome=ReviewOutcome.REVIEWED)

    report = autonomy_report(billing.agent)

    (suggestion,) = report.suggestions
    assert suggestion.kind == SuggestionKind.RELAX
    assert suggestion.text == (
        f"Consider whether band {DUAL_BAND} of “{RULE}” still needs a second reviewer: one approver could decide it."
    )


# --- Tightening on rejections -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("approved", "rejected", "tightened"),
    [
        (8, 2, True),  # 20% of 10
        (9, 1, False),  # 10% of 10
        (7, 2, False),  # 22% of 9: too few decisions to judge
    ],
)
def test_a_high_rejection_rate_suggests_lowering_the_auto_approve_limit(billing, approved, rejected, tightened):
    for _ in range(approved):
        approve(propose("900.00"))
    for _ in range(rejected):
        reject(propose("900.00"))

    report = autonomy_report(billing.agent)

    if not tightened:
        assert report.suggestions == ()
        return
    (suggestion,) = report.suggestions
    assert suggestion.kind == SuggestionKind.TIGHTEN
    assert (suggestion.current_limit, suggestion.suggested_limit) == (Decimal("500.00"), Decimal("250"))
    assert suggestion.evidence == (
        f"people rejected 2 of 10 proposals (20%) in band {SINGLE_BAND} of “{RULE}” in the last 30 days",
    )


# --- The window and band identity ---------------------------------------------------------------------------------


def test_the_window_leaves_out_older_proposals(billing):
    approved_in_single_band(100, created_ago=timedelta(days=31))
    approve(propose("1000.00"))

    assert band(autonomy_report(billing.agent), SINGLE_BAND).proposed == 1
    wider = autonomy_report(billing.agent, days=60)
    assert band(wider, SINGLE_BAND).proposed == 101
    assert kinds(wider) == [SuggestionKind.RAISE]
    earlier = autonomy_report(billing.agent, now=timezone.now() - timedelta(days=30, hours=12))
    assert band(earlier, SINGLE_BAND).proposed == 100


def test_a_band_edited_since_is_reported_but_suggests_nothing(billing):
    approved_in_single_band(100)
    for min_amount, changes in [(500, {"max_amount": Decimal(4000)}), (5000, {"min_amount": Decimal(4000)})]:
        edited = ThresholdBand.objects.get(rule=billing.rule, min_amount=min_amount)
        for name, value in changes.items():
            setattr(edited, name, value)
        edited.save()

    report = autonomy_report(billing.agent)

    row = band(report, SINGLE_BAND)
    assert row.proposed == 100 and not row.still_in_force
    assert report.suggestions == ()


def test_proposals_the_fallback_decided_form_one_row_without_a_band(billing):
    ActionTypeFactory(
        resource=billing.action.resource,
        name="write_off",
        payload_schema=billing.action.payload_schema,
        impact_kind=ImpactKind.AMOUNT,
        impact_field="amount",
    )
    ScopeGrantFactory(agent=billing.agent, resource=billing.action.resource, access=Access.WRITE, actions=["write_off"])
    proposal_create(
        agent=billing.agent,
        request=ProposalRequest(system="billing", action="write_off", record_id="INV-9", payload={"amount": "10"}),
        channel=Channel.API,
    )

    report = autonomy_report(billing.agent)

    (row,) = report.bands
    assert (row.rule_id, row.band, row.mode, row.band_text) == (None, None, DecisionMode.SINGLE, FALLBACK_LABEL)
    assert report.suggestions == ()


def test_the_report_takes_the_same_few_queries_whatever_the_volume(billing, django_assert_max_num_queries):
    approved_in_single_band(150)
    for _ in range(5):
        propose("100.00")
    with django_assert_max_num_queries(5):  # counts, medians (two on PostgreSQL), rules, bands
        autonomy_report(billing.agent)


def test_limits_round_down_to_two_significant_figures():
    assert [round_down(Decimal(value)) for value in ("4873.12", "987.65", "1000", "375", "0.755")] == [
        Decimal("4800"),
        Decimal("980"),
        Decimal("1000"),
        Decimal("370"),
        Decimal("0.75"),
    ]


# --- The admin page -----------------------------------------------------------------------------------------------


def page(slug: str = "collections-agent") -> str:
    return reverse("admin:approvals_autonomy", args=[slug])


@pytest.mark.parametrize("username", ["auditor", "approver"])
def test_the_admin_page_shows_the_record_and_the_suggestion_with_a_link_to_the_rule(client, billing, username):
    approved_in_single_band(112)
    client.force_login(User.objects.get(username=username))

    response = client.get(page())

    assert response.status_code == 200
    html = response.content.decode()
    assert "Autonomy report: collections-agent" in html
    assert (
        "Consider raising the auto-approve limit of “Credit notes on billing” from 500.00 USD to 1,000.00 USD." in html
    )
    assert "no rejection in 112 proposals decided by people in the last 30 days" in html
    assert reverse("admin:governance_thresholdrule_change", args=[billing.rule.pk]) in html
    assert "This page changes nothing" in html
    assert 'method="post"' not in html.split('id="content-main"', 1)[1]


def test_the_admin_page_window_follows_the_days_parameter(client, billing):
    approved_in_single_band(3, created_ago=timedelta(days=40))
    client.force_login(User.objects.get(username="auditor"))

    assert "made no proposals in the last 30 days" in client.get(page()).content.decode()
    wider = client.get(page(), {"days": "60"}).content.decode()
    assert SINGLE_BAND in wider and "made no proposals" not in wider
    assert "The window must be a whole number of days" in client.get(page(), {"days": "-4"}).content.decode()


def test_the_admin_page_is_refused_to_anonymous_visitors_and_to_staff_without_a_role(client, billing):
    response = client.get(page())
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client.force_login(UserFactory(username="no-role"))
    assert client.get(page()).status_code == 403


def test_the_admin_page_of_an_unknown_agent_is_not_found(client, billing):
    client.force_login(User.objects.get(username="auditor"))
    assert client.get(page("no-such-agent")).status_code == 404


# --- The command --------------------------------------------------------------------------------------------------


def test_the_command_prints_the_report_in_plain_words(billing):
    approved_in_single_band(112)
    out = StringIO()

    call_command("autonomy_report", "collections-agent", stdout=out)

    text = out.getvalue()
    assert "Autonomy report for collections-agent: the last 30 days" in text
    assert f"“{RULE}”, band {SINGLE_BAND}" in text
    assert "112 proposed; 0 auto-approved; 112 decided by people; 112 approved (100%), 0 rejected (0%)" in text
    assert (
        "1. Consider raising the auto-approve limit of “Credit notes on billing” from 500.00 USD to 1,000.00 USD."
        in text
    )


def test_the_command_prints_json_on_request(billing):
    approved_in_single_band(100)
    reject(propose("1000.00"))
    out = StringIO()

    call_command("autonomy_report", "collections-agent", "--days", "7", "--json", stdout=out)

    report = json.loads(out.getvalue())
    assert report["agent"] == "collections-agent" and report["days"] == 7
    (row,) = report["bands"]
    assert (row["band"], row["decided_by_people"], row["approved"], row["rejected"]) == (SINGLE_BAND, 101, 100, 1)
    assert row["rejection_rate"] == pytest.approx(1 / 101)
    assert row["median_time_to_decision_seconds"] == 1800.0
    assert row["largest_approved_impact"] == "1200.00"
    assert report["suggestions"] == []


def test_the_command_refuses_an_unknown_agent(billing):
    with pytest.raises(CommandError, match="No agent 'nobody'"):
        call_command("autonomy_report", "nobody")
