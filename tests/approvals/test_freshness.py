"""Decisions that hold while the world moves (approvals/freshness.py): a write is made only while the fields its
decision rested on still hold; otherwise it is decided again on the record as it is now, and goes back to a person.

In-process against the session's sample CRM (`crm_demo`: the worker's service is called here, nothing commits), and
end to end over HTTP with a real worker on a private stack.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from approvals.choices import DecisionMode, ProposalStatus
from approvals.decisions import proposal_approve
from approvals.execution import proposal_execute
from approvals.freshness import RecordMoved
from approvals.models import Proposal
from audit.models import AuditEvent
from connectors.base import RecordChanged
from connectors.registry import connector_for
from governance.models import ActionType, System
from sandbox.testing import crm_control
from tests.factories import post_proposal, propose

User = get_user_model()
S = ProposalStatus


def verbs(proposal) -> list[str]:
    return list(AuditEvent.objects.filter(proposal_id=proposal.pk).order_by("id").values_list("verb", flat=True))


@pytest.fixture
def crm(crm_demo, stack_processes):
    """Someone at the CRM, changing a record by hand (not through Gatehouse), and the CRM's write counts."""

    class Crm:
        url = stack_processes.crm_url

        def set(self, account: str, **fields: str) -> None:
            crm_control(self.url, "/_control/set", {"account": account, "fields": fields})

        def limit(self, account: str) -> str:
            return crm_control(self.url, "/_control/set", {"account": account, "fields": {}})["credit_limit"]

        def writes(self, proposal) -> int:
            return crm_control(self.url, "/_stats")["writes_by_key"].get(str(proposal.pk), 0)

    return Crm()


@pytest.fixture
def approver(crm_demo):
    return User.objects.get(username="approver")


@pytest.mark.django_db
def test_a_raise_approved_before_someone_changed_the_limit_is_not_written_but_stale_with_then_and_now(
    crm, approver, mailoutbox, django_capture_on_commit_callbacks
):
    raised = propose("collections-agent", "update_credit_limit", {"credit_limit": "5000.00"})  # 2,000 → 5,000
    proposal_approve(proposal_id=raised.pk, user=approver, channel="admin")
    crm.set("4471", credit_limit="2500.00")  # a person in the CRM, meanwhile

    with django_capture_on_commit_callbacks(execute=True):
        assert proposal_execute(proposal_id=raised.pk).status == "stale"

    stale = Proposal.objects.get(pk=raised.pk)
    assert stale.status == S.STALE and crm.limit("4471") == "2500.00" and crm.writes(stale) == 0
    assert stale.stale_changes == {"credit_limit": ["2000.00", "2500.00"]}
    assert stale.impact_amount == 2500 and stale.record_snapshot == {"credit_limit": "2500.00"}
    assert stale.decided_by is None and stale.sla_due_at is not None and stale.attempts == 0
    event = AuditEvent.objects.get(proposal_id=stale.pk, verb="stale")
    assert "credit_limit 2000.00 → 2500.00" in event.summary and "2500.00 USD" in event.summary
    assert event.state_before == {"credit_limit": "2000.00"} and event.state_after == {"credit_limit": "2500.00"}
    assert mailoutbox[-1].subject.endswith("Stale, not written: update_credit_limit on 4471")
    assert "credit_limit: 2000.00 then, 2500.00 now" in mailoutbox[-1].body

    # Approving the refreshed proposal writes the new value, once.
    proposal_approve(proposal_id=stale.pk, user=approver, channel="admin")
    assert proposal_execute(proposal_id=stale.pk).status == "executed"
    assert crm.limit("4471") == "5000.00" and crm.writes(stale) == 1
    done = Proposal.objects.get(pk=stale.pk)
    assert done.state_before == {"credit_limit": "2500.00"}
    assert verbs(done) == ["proposed", "approved", "executing", "stale", "approved", "executing", "executed"]


@pytest.mark.django_db
def test_an_approval_of_a_proposal_whose_record_moved_does_not_count_until_the_new_impact_is_seen(crm, approver):
    raised = propose("collections-agent", "update_credit_limit", {"credit_limit": "5000.00"})
    crm.set("4471", credit_limit="4800.00")  # the raise is now 200, not 3,000

    with pytest.raises(RecordMoved, match=r"credit_limit 2000\.00 → 4800\.00.*impact is now 200\.00 USD"):
        proposal_approve(proposal_id=raised.pk, user=approver, channel="admin")

    again = Proposal.objects.get(pk=raised.pk)
    assert again.status == S.PENDING_APPROVAL and again.decided_by is None
    assert again.impact_amount == 200 and again.record_snapshot == {"credit_limit": "4800.00"}
    assert again.mode == DecisionMode.SINGLE  # below the auto band now, but a person was deciding it: they still do
    refreshed = AuditEvent.objects.get(proposal_id=again.pk, verb="refreshed")
    assert refreshed.person == approver and refreshed.input == {"changed": {"credit_limit": ["2000.00", "4800.00"]}}

    proposal_approve(proposal_id=again.pk, user=approver, channel="admin")  # what they now see: counts
    assert proposal_execute(proposal_id=again.pk).status == "executed"
    assert crm.limit("4471") == "5000.00" and crm.writes(again) == 1


@pytest.mark.django_db
def test_an_auto_approved_raise_still_in_the_auto_band_goes_ahead_on_the_new_figures(crm):
    raised = propose("collections-agent", "update_credit_limit", {"credit_limit": "2300.00"})  # +300: auto
    crm.set("4471", credit_limit="2100.00")

    assert proposal_execute(proposal_id=raised.pk).status == "executed"

    done = Proposal.objects.get(pk=raised.pk)
    assert crm.limit("4471") == "2300.00" and done.impact_amount == 200
    assert done.state_before == {"credit_limit": "2100.00"}
    assert verbs(done) == ["proposed", "auto_approved", "executing", "refreshed", "executed"]
    assert "still auto-approved by rule" in AuditEvent.objects.get(proposal_id=done.pk, verb="refreshed").summary


@pytest.mark.django_db
def test_an_auto_approved_raise_the_change_pushes_out_of_the_auto_band_goes_to_a_person(crm):
    raised = propose("collections-agent", "update_credit_limit", {"credit_limit": "2300.00"})  # +300: auto
    crm.set("4471", credit_limit="1500.00")  # now +800: one approver

    assert proposal_execute(proposal_id=raised.pk).status == "stale"

    stale = Proposal.objects.get(pk=raised.pk)
    assert stale.status == S.STALE and stale.mode == DecisionMode.SINGLE and stale.approver.username == "approver"
    assert crm.limit("4471") == "1500.00" and crm.writes(stale) == 0


@pytest.mark.django_db
def test_a_field_already_holding_the_value_the_write_gives_it_is_its_own_write_landed_not_a_change(crm):
    """A worker died after the CRM applied the write and before Gatehouse recorded it: the retry is no stale."""
    raised = propose("collections-agent", "update_credit_limit", {"credit_limit": "2300.00"})
    crm.set("4471", credit_limit="2300.00")
    assert proposal_execute(proposal_id=raised.pk).status == "executed"
    assert not AuditEvent.objects.filter(proposal_id=raised.pk, verb__in=["stale", "refreshed"]).exists()


@pytest.mark.django_db
def test_a_change_to_a_field_the_decision_did_not_rest_on_is_no_reason_to_stop(crm):
    raised = propose("collections-agent", "update_credit_limit", {"credit_limit": "2300.00"})
    crm.set("4471", name="Northwind Traders Ltd", status="on_hold")
    assert proposal_execute(proposal_id=raised.pk).status == "executed"
    assert crm.limit("4471") == "2300.00"


@pytest.mark.django_db
def test_the_crm_refuses_a_write_on_a_version_older_than_the_one_it_holds(crm):
    """What the worker hands the connector is a condition: a change between its read and its write is refused by the
    system itself, and the loop judges the record again."""
    system = System.objects.get(slug="crm")
    action = ActionType.objects.get(system=system, name="update_credit_limit")
    connector = connector_for(system)
    read = connector.read("accounts", "4471")
    crm.set("4471", name="someone edited it")  # bumps the version
    with pytest.raises(RecordChanged):
        connector.execute(action, "4471", {"credit_limit": "2300.00"}, idempotency_key="k-1", expected=read)
    assert crm.limit("4471") == "2000.00"


@pytest.mark.django_db
def test_the_approvers_page_shows_the_live_value_and_the_new_impact_and_a_stale_proposals_then_and_now(crm, approver):
    client = Client()
    client.force_login(approver)
    raised = propose("collections-agent", "update_credit_limit", {"credit_limit": "5000.00"})
    page = reverse("admin:approvals_proposal_change", args=[raised.pk])
    crm.set("4471", credit_limit="2600.00")
    moved = client.get(page).content.decode()
    assert 'id="record-moved"' in moved
    assert (
        "The record changed since the agent proposed this: the impact was computed on 2,000.00; it is 2,600.00 now."
        in moved
    )
    assert '<strong id="new-impact">2,400.00 USD</strong>' in moved

    with pytest.raises(RecordMoved):
        proposal_approve(proposal_id=raised.pk, user=approver, channel="admin")
    proposal_approve(proposal_id=raised.pk, user=approver, channel="admin")
    crm.set("4471", credit_limit="2700.00")
    assert proposal_execute(proposal_id=raised.pk).status == "stale"
    stale = client.get(page).content.decode()
    assert "Not written: the record changed after the decision" in stale
    assert "(credit limit 2,600.00 → 2,700.00)" in stale and "Stale: the record changed" in stale
    assert 'id="record-moved"' not in stale  # decided again on 2,700.00, which the CRM still holds


@pytest.mark.slow
def test_end_to_end_a_raise_approved_before_the_crm_changed_goes_stale_and_its_refreshed_approval_writes_once(
    private_stack,
):
    private_stack.web()  # the agent's door; no worker yet: the approval waits in the queue, as in a backlog
    response = post_proposal(private_stack.agent(), "update_credit_limit", {"credit_limit": "5000.00"})
    assert response.status_code == 201, response.text
    pk = response.json()["id"]
    approver = User.objects.get(username="approver")
    proposal_approve(proposal_id=pk, user=approver, channel="admin")
    private_stack.crm_control("/_control/set", {"account": "4471", "fields": {"credit_limit": "2500.00"}})

    private_stack.worker()
    stale = private_stack.wait_for(pk, "stale", "executed", "failed")
    assert stale.status == "stale" and private_stack.crm_account("4471")["credit_limit"] == "2500.00"
    client = Client()
    client.force_login(approver)
    page = client.get(reverse("admin:approvals_proposal_change", args=[pk])).content.decode()
    assert "Not written: the record changed after the decision" in page and "(credit limit 2,000.00 → 2,500.00)" in page
    assert private_stack.agent().get(f"/api/v1/proposals/{pk}").json()["status"] == "stale"

    proposal_approve(proposal_id=pk, user=approver, channel="admin")
    private_stack.wait_for(pk, "executed")
    assert private_stack.crm_account("4471")["credit_limit"] == "5000.00"
    assert private_stack.crm_writes(pk) == 1
