"""The worker's claim reads every check's facts with the proposal in one statement (approvals/execution.py): the same
verdicts as asking each check on its own, in a bounded number of queries."""

from __future__ import annotations

from datetime import timedelta

import pytest

from approvals.choices import ProposalStatus
from approvals.execution import proposal_execute
from approvals.models import Proposal
from audit.choices import Verb
from audit.followers import interested
from audit.models import AuditEvent
from governance.choices import Access
from governance.models import ScopeGrant
from tests.factories import propose, propose_credit_note
from tests.faults import verbs
from webhooks.outbox import forget_subscriptions


@pytest.fixture
def billing(demo, f):
    from connectors.services import credential_set

    world = f.billing_world()
    credential_set(system=world.system, secret="s3cret-billing-key", actor=None, channel="command")
    return world


def second_write_grant(world, actions: list[str]) -> ScopeGrant:
    """Another current write grant of the agent on the same resource, naming `actions`."""
    grant = ScopeGrant.objects.get(agent=world.agent, system=world.system, access=Access.WRITE)
    grant.pk, grant.actions = None, actions
    grant.save()
    return grant


def test_a_write_allowed_by_the_second_of_two_grants_is_not_refused(billing):
    """Two current write grants on the resource, the first naming another action: the one naming it allows it."""
    ScopeGrant.objects.filter(agent=billing.agent, system=billing.system, access=Access.WRITE).update(
        actions=["send_statement"]
    )
    second_write_grant(billing, ["credit_note"])
    proposal = propose_credit_note("120.00")

    outcome = proposal_execute(proposal_id=proposal.pk)

    assert "write grant" not in outcome.detail
    assert Proposal.objects.get(pk=proposal.pk).status != ProposalStatus.FAILED


def test_a_write_named_by_none_of_two_grants_fails_without_calling_the_system(billing):
    proposal = propose_credit_note("120.00")
    ScopeGrant.objects.filter(agent=billing.agent, system=billing.system, access=Access.WRITE).update(
        actions=["send_statement"]
    )
    second_write_grant(billing, ["refund"])

    outcome = proposal_execute(proposal_id=proposal.pk)

    proposal.refresh_from_db()
    assert outcome.status == "failed" and proposal.status == ProposalStatus.FAILED
    assert proposal.failure_reason == "not written: collections-agent's write grant for credit_note was withdrawn"


@pytest.mark.postgres
def test_an_auto_band_execution_takes_a_bounded_number_of_queries(
    private_stack, django_assert_max_num_queries, settings
):
    """A regression guard, not a timing: claim (lock and read every check's facts, the rule's bands, the move, its
    event), the call to the CRM, the record (lock, the move, its event) — 11 statements with BEGIN and COMMIT.
    Asking each check on its own took 18. Not counted: the webhook subscriptions, which a process reads once every
    GATEHOUSE_WEBHOOK_REFRESH whatever it does (webhooks/outbox.py), read here before."""
    proposal = propose("collections-agent", "add_note", {"text": "Called; promised to pay Friday."}, "4473")
    assert proposal.status == ProposalStatus.APPROVED
    settings.GATEHOUSE_WEBHOOK_REFRESH = timedelta(minutes=10)
    forget_subscriptions()
    interested(Verb.EXECUTED)  # the process's view of the subscriptions, read now (none)

    with django_assert_max_num_queries(11):
        outcome = proposal_execute(proposal_id=proposal.pk)

    assert outcome.status == "executed"
    assert private_stack.crm_writes(str(proposal.pk)) == 1
    assert verbs(proposal.pk) == ["proposed", "auto_approved", "executing", "executed"]
    assert AuditEvent.objects.get(proposal_id=proposal.pk, verb="executed").summary.endswith("(auto-approved).")
