"""The admin home per role: each demo role finds its own work, with concrete numbers, clocks and bounded queries.

Proposals go through the services against a billing system whose credit notes carry their amount in the payload (no
record to read): auto below 500, one approver (Dana, 4 h) up to 5,000, Dana plus a second reviewer above.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals.decisions import proposal_approve, proposal_reject
from approvals.execution import proposal_claim, proposal_record_failure
from approvals.killswitch import SwitchTarget, kill_switch_on
from approvals.models import Proposal
from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.models import Credential
from console.dashboard import SECTION_ROLES, dashboard_for
from console.dashboard.wording import sla_clock, span
from governance.choices import Access, ImpactKind, Role
from governance.models import Agent, System, ThresholdBand
from governance.services import threshold_rule_sign_off
from tests.factories import (
    ActionTypeFactory,
    ResourceFactory,
    ScopeGrantFactory,
    SystemFactory,
    ThresholdRuleFactory,
    UserFactory,
    billing_world,
    standard_bands,
)
from tests.factories import propose_credit_note as propose
from tests.factories import record_execution as execute

User = get_user_model()


@pytest.fixture
def billing(demo):
    """A billing system with credit notes decided by amount (tests.factories.billing_world)."""
    return billing_world(rule_name="Credit notes on billing")


def user(username: str):
    return User.objects.get(username=username)


def fail(proposal: Proposal, reason: str = "The billing system answered 500 six times.") -> Proposal:
    if proposal.status != "approved":
        proposal = proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel=Channel.ADMIN)
    proposal_claim(proposal_id=proposal.pk)
    return proposal_record_failure(proposal_id=proposal.pk, reason=reason)


def set_fields(proposal: Proposal, **fields) -> None:
    """Stands in for the clock passing (proposals keep no history; this is not a transition)."""
    Proposal.objects.filter(pk=proposal.pk).update(**fields)


# --- Clocks -------------------------------------------------------------------------------------------------------


def test_clocks_read_like_a_person_would_say_them():
    now = timezone.now()
    assert sla_clock(now + timedelta(hours=2, minutes=10, seconds=30), now) == ("due in 2 h 10 min", False)
    assert sla_clock(now - timedelta(minutes=15, seconds=20), now) == ("overdue by 15 min", True)
    assert sla_clock(now + timedelta(days=3, hours=4), now) == ("due in 3 d 4 h", False)
    assert sla_clock(now + timedelta(seconds=40), now) == ("due in less than a minute", False)
    assert sla_clock(None, now) == ("no SLA", False)
    assert span(59 * 60) == "59 min"


# --- Each role's sections -----------------------------------------------------------------------------------------


def test_the_approver_sees_what_awaits_their_decision_oldest_sla_first_with_clocks(billing):
    now = timezone.now()
    later, overdue = propose("3000.00", "INV-1"), propose("1200.00", "INV-2")
    propose("100.00", "INV-3")  # auto: nobody's decision
    set_fields(later, sla_due_at=now + timedelta(hours=2, minutes=10))
    set_fields(overdue, sla_due_at=now - timedelta(minutes=15))

    board = dashboard_for(user("approver"), now=now)

    assert board.sections == ["queue", "escalations", "charts"]
    assert board.queue.total == 2
    assert [(row.proposal.record_id, row.clock, row.overdue) for row in board.queue.rows] == [
        ("INV-2", "overdue by 15 min", True),
        ("INV-1", "due in 2 h 10 min", False),
    ]
    assert board.queue.rows[0].url == reverse("admin:approvals_proposal_change", args=[overdue.pk])
    assert board.queue.see_all.endswith("?queue=mine")
    assert board.escalations.total == 0  # past the SLA, but the beat job has not escalated it yet


def test_a_decided_proposal_leaves_the_queue(billing):
    proposal = propose("3000.00")
    proposal_reject(proposal_id=proposal.pk, user=user("approver"), channel=Channel.ADMIN, reason="No.")
    assert dashboard_for(user("approver")).queue.total == 0


def test_the_reviewer_sees_an_empty_review_queue_then_the_executed_dual_approval(billing):
    board = dashboard_for(user("reviewer"))
    assert board.sections == ["reviews"]
    assert board.reviews.total == 0 and board.reviews.rows == []

    proposal = propose("6000.00")
    proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel=Channel.ADMIN)
    execute(proposal)
    now = timezone.now()
    set_fields(proposal, review_due_at=now + timedelta(hours=23, minutes=5))

    board = dashboard_for(user("reviewer"), now=now)
    assert board.reviews.total == 1
    assert board.reviews.rows[0].clock == "due in 23 h 5 min"
    assert board.reviews.see_all.endswith("?queue=review")
    assert dashboard_for(user("approver")).queue.total == 0  # the approver does not review their own decision


def test_the_owner_sees_rules_to_sign_off_readiness_credentials_and_their_failures(billing):
    now = timezone.now()
    band = ThresholdBand.objects.get(rule=billing.rule, min_amount=500)
    band.sla = timedelta(hours=8)
    band.save()  # any edit voids the sign-off
    crm = Credential.objects.get(system__slug="crm")
    crm.last_rotated_at = now - timedelta(days=80)  # 90-day interval: due in 10 days
    crm.save()
    fail(propose("1200.00"))

    board = dashboard_for(user("owner"), now=now)

    assert board.sections == ["rules", "failures", "readiness", "credentials", "charts"]
    assert [(row.rule.name, row.state) for row in board.rules.rows] == [
        ("Credit notes on billing", "edited since it was signed off: void")
    ]
    assert [(row.credential.system.slug, row.clock, row.overdue) for row in board.credentials.rows] == [
        ("crm", "due in 10 d 0 h", False)
    ]
    assert board.credentials.rows[0].may_rotate
    assert board.credentials.rows[0].url == reverse("admin:connectors_credential_rotate", args=[crm.pk])
    agents = {row.agent.slug: row for row in board.readiness.agents}
    assert agents["reporting-agent"].ok
    collections = agents["collections-agent"]
    assert not collections.ok
    # billing has no vaulted credential: the first item that fails; the drill, the void rule and probation follow.
    assert collections.first_failing.key == "credentials"
    assert "billing has no vaulted credential" in collections.first_failing.reason
    assert collections.failing == 4
    assert board.readiness.ready == 1
    assert board.failures.total == 1
    assert board.failures.rows[0].proposal.failure_reason == "The billing system answered 500 six times."
    assert board.charts.scope == "your systems"


def test_an_owner_sees_only_their_own_systems_failures_and_credentials(billing):
    stranger = UserFactory(username="stranger")
    other = SystemFactory(slug="payroll", owner=stranger)
    credential = Credential(system=other, rotation_interval=timedelta(days=1))
    credential.encrypt_secret("s3cret")
    credential.save()
    resource = ResourceFactory(system=other, name="invoices", label="invoice", fields=["amount"])
    action = ActionTypeFactory(
        resource=resource,
        name="credit_note",
        payload_schema={"type": "object", "properties": {"amount": {"type": "string"}}},
        impact_kind=ImpactKind.AMOUNT,
        impact_field="amount",
    )
    rule = ThresholdRuleFactory(system=other, action_type=action)
    standard_bands(rule, user("approver"), Group.objects.get(name=Role.REVIEWERS))
    threshold_rule_sign_off(rule=rule, user=stranger, channel=Channel.COMMAND)
    ScopeGrantFactory(agent=billing.agent, resource=resource, access=Access.WRITE, actions=["credit_note"])
    fail(propose("1200.00", system="payroll"))
    later = timezone.now() + timedelta(days=2)  # the payroll credential is overdue by then

    owner, operator = dashboard_for(user("owner"), now=later), dashboard_for(user("operator"), now=later)

    assert owner.failures.total == 1  # collections-agent is Olivia's: its failures are hers wherever they happen
    assert [row.credential.system.slug for row in owner.credentials.rows] == []
    assert [row.credential.system.slug for row in operator.credentials.rows] == ["payroll"]
    due = operator.credentials.rows[0]
    assert due.overdue and due.clock.startswith("overdue by 1 d")
    # The stranger's credential: the operator reads it, only its owner (or a superuser) rotates it.
    assert not due.may_rotate and due.url == reverse("admin:connectors_credential_change", args=[credential.pk])
    assert operator.failures.total == 1 and operator.charts.scope == "all systems"


def test_the_operator_sees_the_kill_switches_failures_and_availability(billing):
    kill_switch_on(
        target=SwitchTarget(agent=Agent.objects.get(slug="reporting-agent")),
        reason="Reads too much at night",
        user=user("operator"),
        channel=Channel.ADMIN,
    )
    kill_switch_on(
        target=SwitchTarget(system=System.objects.get(slug="crm-staging")),
        reason="Staging refresh",
        user=user("operator"),
        channel=Channel.ADMIN,
    )
    fail(propose("1200.00"), reason="Timed out after 6 attempts.")

    board = dashboard_for(user("operator"))

    assert board.sections == [
        "switches",
        "escalations",
        "failures",
        "availability",
        "readiness",
        "credentials",
        "charts",
    ]
    switches = board.switches
    assert not switches.global_on and not switches.all_clear
    assert [(item.label, item.reason) for item in switches.disabled_agents.rows] == [
        ("reporting-agent", "Reads too much at night")
    ]
    assert switches.disabled_agents.rows[0].url == reverse("admin:approvals_kill_switch") + "?agent=reporting-agent"
    assert [(item.label, item.reason) for item in switches.frozen_systems.rows] == [("crm-staging", "Staging refresh")]
    assert switches.frozen_systems.rows[0].url == reverse("admin:approvals_kill_switch") + "?system=crm-staging"
    assert [row.proposal.failure_reason for row in board.failures.rows] == ["Timed out after 6 attempts."]
    assert board.availability.trouble == [] and board.availability.probed == 4
    assert board.readiness.total == 2


def test_the_global_stop_shows_on(billing):
    kill_switch_on(target=SwitchTarget(), reason="Incident 42", user=user("operator"), channel=Channel.ADMIN)
    switches = dashboard_for(user("operator")).switches
    assert switches.global_on and switches.global_reason == "Incident 42"


def test_escalated_proposals_are_listed_for_approvers_and_operators(billing):
    proposal = propose("1200.00")
    now = timezone.now()
    set_fields(proposal, status="escalated", sla_due_at=now - timedelta(hours=1, minutes=5))
    for username in ("approver", "operator"):
        escalations = dashboard_for(user(username), now=now).escalations
        assert [(row.proposal.pk, row.clock) for row in escalations.rows] == [(proposal.pk, "overdue by 1 h 5 min")]
    assert dashboard_for(user("approver"), now=now).queue.rows[0].overdue  # still the approver's to decide


def test_the_auditor_sees_recent_denials_overrides_and_links_to_the_trail(billing):
    agent = Agent.objects.get(slug="reporting-agent")
    audit_record(
        verb=Verb.DENIED,
        actor=agent,
        channel=Channel.API,
        outcome="scope_denied",
        summary="reporting-agent was refused: no write grant for credit_note on billing.",
    )
    audit_record(
        verb=Verb.READINESS_OVERRIDDEN,
        actor=user("admin"),
        channel=Channel.ADMIN,
        summary="admin overrode the readiness checklist for billing: quarter end.",
    )

    board = dashboard_for(user("auditor"))

    assert board.sections == ["audit", "charts"]
    assert [event.verb for event in board.audit.recent] == ["readiness_overridden", "denied"]
    counts = {count.verb: count.count for count in board.audit.counts}
    assert counts == {"denied": 1, "rejected": 0, "flagged": 0, "readiness_overridden": 1, "kill_switch_on": 0}
    denied = next(count for count in board.audit.counts if count.verb == "denied")
    assert denied.url == reverse("admin:audit_auditevent_changelist") + "?verb__exact=denied"
    labels = [label for label, _ in board.audit.links]
    assert labels == ["The whole audit trail", "Today's events", "Export today as CSV", "Chain checks"]
    assert board.audit.last_check is None
    assert board.charts.failures_url == reverse("admin:audit_auditevent_changelist") + "?verb__exact=failed"
    assert dashboard_for(user("approver")).charts.failures_url == ""  # approvers do not read the audit trail


def test_the_superuser_sees_every_section(billing):
    assert dashboard_for(user("admin")).sections == list(SECTION_ROLES)


def test_a_staff_user_without_a_role_sees_no_section(db):
    assert dashboard_for(UserFactory(username="temp")).sections == []


# --- Charts -------------------------------------------------------------------------------------------------------


def test_the_charts_count_proposals_by_band_and_outcome_and_time_to_decision(billing):
    for record in ("A", "B", "C"):
        propose("100.00", record)  # auto: approved, waiting for a worker
    quick = proposal_approve(proposal_id=propose("1000.00", "D").pk, user=user("approver"), channel=Channel.ADMIN)
    slow = proposal_reject(
        proposal_id=propose("2000.00", "E").pk, user=user("approver"), channel=Channel.ADMIN, reason="No."
    )
    propose("3000.00", "F")  # waiting
    failed = fail(propose("4000.00", "G"))
    now = timezone.now()
    set_fields(quick, created_at=now - timedelta(hours=3), decided_at=now - timedelta(hours=3) + timedelta(minutes=10))
    set_fields(  # 5 h, with a 4-hour SLA
        slow,
        created_at=now - timedelta(hours=6),
        sla_due_at=now - timedelta(hours=2),
        decided_at=now - timedelta(hours=1),
    )
    set_fields(failed, created_at=now - timedelta(hours=2), decided_at=now - timedelta(hours=1, minutes=30))

    charts = dashboard_for(user("admin"), now=now).charts

    assert charts.proposed == 7
    bars = {bar.label: {segment.key: segment.count for segment in bar.segments} for bar in charts.bands}
    assert bars == {
        "Auto-executed": {"in_flight": 3},
        "One approver": {"in_flight": 1, "rejected": 1, "waiting": 1, "failed": 1},
    }
    assert [bar.label for bar in charts.bands] == ["Auto-executed", "One approver"]
    auto = charts.bands[0]
    assert auto.total == 3 and auto.segments[0].width == pytest.approx(75.0)  # 3 of the widest bar's 4
    assert [(bucket.label, bucket.count) for bucket in charts.buckets] == [
        ("under 15 min", 1),
        ("15 min – 1 h", 1),
        ("1 – 4 h", 0),
        ("4 – 24 h", 1),
        ("over a day", 0),
    ]
    assert (charts.decided, charts.with_sla, charts.within_sla) == (3, 3, 2)
    assert charts.failures == 1 and charts.reversals == 0
    assert charts.per_day[-1].day == timezone.localdate(now) and charts.per_day[-1].failures == 1
    assert charts.per_day[-1].failure_height == pytest.approx(78.0) and len(charts.per_day) == 30


# --- Bounded --------------------------------------------------------------------------------------------------------


def test_the_superusers_home_page_costs_a_bounded_number_of_queries_whatever_the_volume(
    billing, django_assert_max_num_queries
):
    for record in range(3):
        fail(propose("1200.00", f"INV-{record}"))
        propose("3000.00", f"WAIT-{record}")
    admin = user("admin")
    with CaptureQueriesContext(connection) as few:
        dashboard_for(admin)
    template = Proposal.objects.filter(status="failed").first()
    copied = [f.attname for f in Proposal._meta.concrete_fields if f.attname != "id"]
    Proposal.objects.bulk_create(
        [Proposal(**{**{name: getattr(template, name) for name in copied}, "record_id": f"X-{n}"}) for n in range(40)]
    )
    admin = user("admin")
    with django_assert_max_num_queries(len(few.captured_queries)):
        board = dashboard_for(admin)
    assert board.failures.total == 43 and len(board.failures.rows) == 10 and board.failures.more == 33
    assert len(few.captured_queries) <= 50  # two agents' readiness checklists are most of it


# --- The page -----------------------------------------------------------------------------------------------------


def test_the_admin_home_page_shows_the_approver_their_queue(billing, client):
    proposal = propose("3000.00")
    client.force_login(user("approver"))
    page = client.get(reverse("admin:index")).content.decode()
    assert 'id="dash-queue"' in page and "Awaiting your decision" in page
    assert reverse("admin:approvals_proposal_change", args=[proposal.pk]) in page
    assert "due in 3 h 59 min" in page or "due in 4 h 0 min" in page
    assert "3,000.00 USD" in page
    assert 'id="dash-switches"' not in page and 'id="dash-audit"' not in page
    assert "Everything in the admin" in page  # the app list is still there, below


def test_every_section_renders_for_the_superuser(billing, client):
    fail(propose("1200.00"))
    client.force_login(user("admin"))
    page = client.get(reverse("admin:index")).content.decode()
    for section in SECTION_ROLES:
        assert f'id="dash-{section}"' in page, section
    assert "<svg" in page and "1 failure" in page


def test_a_user_without_a_role_is_told_so(db, client):
    client.force_login(UserFactory(username="temp"))
    page = client.get(reverse("admin:index")).content.decode()
    assert "No Gatehouse role is set for your account" in page


def test_an_apps_own_index_page_has_no_dashboard(billing, client):
    client.force_login(user("admin"))
    page = client.get(reverse("admin:app_list", args=["approvals"])).content.decode()
    assert 'id="dashboard"' not in page and "Everything in the admin" not in page and "Proposals" in page
