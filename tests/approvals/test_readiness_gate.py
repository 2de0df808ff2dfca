"""The readiness gate holds on every path to production writes, and again just before each write."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from approvals.choices import ProposalStatus
from approvals.execution import paused_executions_resume, proposal_execute
from approvals.models import Drill, OutboxMessage, Proposal
from audit.models import AuditEvent
from connectors.models import Credential
from connectors.services import credential_set
from governance.choices import Environment, WriteMode
from governance.models import System
from tests.factories import propose_credit_note
from tests.governance.test_admin import as_form_data

pytestmark = pytest.mark.django_db
User = get_user_model()


def test_staging_then_enabled_then_production_is_refused_at_the_last_step(client, demo):
    """The bypass: writes enabled while the system says staging (no gate there), then moved to production."""
    crm = System.objects.get(slug="crm")
    System.objects.filter(pk=crm.pk).update(environment=Environment.STAGING, write_mode=WriteMode.READ_ONLY)
    crm.refresh_from_db()
    client.force_login(User.objects.get(username="operator"))
    change = reverse("admin:governance_system_change", args=[crm.pk])

    assert client.post(change, as_form_data(crm, write_mode=WriteMode.ENABLED)).status_code == 302
    crm.refresh_from_db()
    refused = client.post(change, as_form_data(crm, environment=Environment.PRODUCTION))

    assert refused.status_code == 200
    assert "Moving crm to production with its writes on is refused" in refused.content.decode()
    crm.refresh_from_db()
    assert crm.environment == Environment.STAGING


@pytest.fixture
def billing(demo, f):
    world = f.billing_world()
    credential_set(system=world.system, secret="s3cret-billing-key", actor=None, channel="command")
    return world


def age_credential(system: System, days: int) -> None:
    Credential.objects.filter(system=system).update(last_rotated_at=timezone.now() - timedelta(days=days))


def test_a_write_whose_systems_credential_went_overdue_is_paused_then_resumed_once_rotated(billing):
    proposal = propose_credit_note("120.00")  # auto band: approved, waiting for a worker
    assert proposal.status == ProposalStatus.APPROVED
    age_credential(billing.system, days=100)  # a 90-day rotation, ten days overdue

    outcome = proposal_execute(proposal_id=proposal.pk)

    proposal.refresh_from_db()
    assert outcome.status == "suppressed" and proposal.status == ProposalStatus.ON_HOLD
    assert proposal.hold_reason.startswith("readiness: the credential of billing was due for rotation")
    held = AuditEvent.objects.get(proposal_id=proposal.pk, verb="held")
    assert "due for rotation" in held.summary
    assert paused_executions_resume() == 0  # still overdue: it stays paused

    credential_set(system=billing.system, secret="s3cret-billing-key-2", actor=None, channel="command")
    assert paused_executions_resume() == 1

    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.APPROVED and proposal.hold_reason == ""
    assert OutboxMessage.objects.filter(proposal=proposal).exists()
    assert AuditEvent.objects.filter(proposal_id=proposal.pk, verb="released").count() == 1


def test_a_drill_grown_older_than_thirty_days_pauses_production_writes(billing):
    staging = System.objects.create(
        name="Billing staging", slug="billing-staging", category="record", integration_pattern="direct_api",
        connector_kind="http", connector_config={"base_url": "http://127.0.0.1:9"}, owner=billing.owner,
        environment=Environment.STAGING,
    )  # fmt: skip
    System.objects.filter(pk=billing.system.pk).update(staging_twin=staging)
    drill = Drill.objects.create(system=staging, passed=True, channel="command")
    Drill.objects.filter(pk=drill.pk).update(finished_at=timezone.now() - timedelta(days=31))
    proposal = propose_credit_note("80.00")

    proposal_execute(proposal_id=proposal.pk)

    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.ON_HOLD
    assert "rollback drill" in proposal.hold_reason and "more than 30 days ago" in proposal.hold_reason


def test_a_kill_switch_released_does_not_release_a_write_paused_for_readiness(billing):
    from approvals.killswitch import SwitchTarget, kill_switch_off, kill_switch_on

    proposal = propose_credit_note("60.00")
    age_credential(billing.system, days=100)
    proposal_execute(proposal_id=proposal.pk)
    kill_switch_on(target=SwitchTarget(system=billing.system), reason="maintenance", channel="command")
    kill_switch_off(target=SwitchTarget(system=billing.system), reason="done", channel="command")
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.ON_HOLD


def test_an_auto_approved_write_whose_rule_was_edited_since_waits_for_its_sign_off_and_the_owners_hear(
    billing, mailoutbox, django_capture_on_commit_callbacks
):
    from governance.models import ThresholdBand
    from governance.services import threshold_rule_sign_off

    proposal = propose_credit_note("120.00")  # auto-approved by the rule as signed off
    ThresholdBand.objects.filter(rule=billing.rule, min_amount=0).update(max_amount="900.00")  # the sign-off is void
    ThresholdBand.objects.filter(rule=billing.rule, min_amount=500).update(min_amount="900.00")

    with django_capture_on_commit_callbacks(execute=True):
        assert proposal_execute(proposal_id=proposal.pk).status == "suppressed"

    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.ON_HOLD
    assert proposal.hold_reason == (
        "readiness: rule “Credit notes on billing”, which approved it, is no longer signed off (edited since)"
    )
    [notice] = mailoutbox
    assert notice.subject.endswith("Paused: credit_note on billing INV-1 waits for readiness")
    assert set(notice.to) >= {billing.owner.email, billing.agent.owner.email}
    assert paused_executions_resume() == 0

    threshold_rule_sign_off(rule=billing.rule, user=billing.owner, channel="admin")
    assert paused_executions_resume() == 1
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.APPROVED


def test_a_person_approved_write_stands_on_its_own_when_the_rule_is_edited_afterwards(billing):
    from approvals.decisions import proposal_approve
    from governance.models import ThresholdBand

    proposal = propose_credit_note("1200.00")  # one approver
    proposal_approve(proposal_id=proposal.pk, user=billing.approver, channel="admin")
    ThresholdBand.objects.filter(rule=billing.rule, min_amount=500).update(sla=timedelta(hours=9))
    assert proposal_execute(proposal_id=proposal.pk).status != "suppressed"


def test_a_write_whose_grant_was_withdrawn_after_the_decision_fails_without_calling_the_system(billing):
    from governance.models import ScopeGrant

    proposal = propose_credit_note("120.00")
    ScopeGrant.objects.filter(agent=billing.agent, system=billing.system).delete()

    outcome = proposal_execute(proposal_id=proposal.pk)

    proposal.refresh_from_db()
    assert outcome.status == "failed" and proposal.status == ProposalStatus.FAILED
    assert proposal.failure_reason == "not written: collections-agent's write grant for credit_note was withdrawn"
    assert proposal.attempts == 1 and proposal.state_after is None
