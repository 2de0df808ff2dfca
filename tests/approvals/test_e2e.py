"""The governed path over real HTTP against the running stack: web process, Celery worker, the sample CRM."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from approvals.decisions import proposal_approve
from approvals.models import Proposal
from audit.models import AuditEvent
from tests.factories import post_proposal

pytestmark = [pytest.mark.slow]


def propose(client, action: str, payload: dict, record: str = "4471", **headers) -> dict:
    response = post_proposal(client, action, payload, record, **headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_300_dollar_raise_executes_and_is_visible_in_the_crm(live):
    agent = live.agent()
    body = propose(agent, "update_credit_limit", {"credit_limit": "2300.00"})
    assert body["status"] == "approved"
    assert body["impact"] == {"amount": "300.00", "currency": "USD"}
    assert body["decision"]["mode"] == "auto"
    proposal = live.wait_for(body["id"], "executed")
    assert live.crm_account("4471")["credit_limit"] == "2300.00"
    assert proposal.state_before == {"credit_limit": "2000.00"}
    assert proposal.state_after == {"credit_limit": "2300.00"}
    verbs = list(AuditEvent.objects.filter(proposal_id=proposal.pk).order_by("id").values_list("verb", flat=True))
    assert verbs == ["proposed", "auto_approved", "executing", "executed"]
    assert agent.get(f"/api/v1/proposals/{body['id']}").json()["status"] == "executed"


def test_a_3000_dollar_raise_waits_for_the_approver_within_the_sla(live):
    body = propose(live.agent(), "update_credit_limit", {"credit_limit": "5000.00"})
    assert body["status"] == "pending_approval"
    assert body["decision"]["mode"] == "single"
    assert body["decision"]["approver"] == "approver"
    due = Proposal.objects.get(pk=body["id"]).sla_due_at
    assert timedelta(hours=3, minutes=59) < due - timezone.now() <= timedelta(hours=4)
    assert live.crm_account("4471")["credit_limit"] == "2000.00"


def test_an_approved_3000_dollar_raise_is_executed_by_the_worker(live):
    body = propose(live.agent(), "update_credit_limit", {"credit_limit": "5000.00"})
    approver = get_user_model().objects.get(username="approver")
    proposal_approve(proposal_id=body["id"], user=approver, channel="admin")
    live.wait_for(body["id"], "executed")
    assert live.crm_account("4471")["credit_limit"] == "5000.00"
    executed = AuditEvent.objects.get(proposal_id=body["id"], verb="executed")
    assert executed.person == approver and "approved by approver" in executed.summary


def test_a_6000_dollar_raise_needs_the_named_approver_and_a_second_reviewer(live):
    body = propose(live.agent(), "update_credit_limit", {"credit_limit": "8000.00"})
    assert body["status"] == "pending_approval"
    assert body["decision"]["mode"] == "dual"
    assert body["decision"]["approver"] == "approver"
    assert body["decision"]["review_group"] == "Reviewers"


def test_add_note_auto_executes(live):
    body = propose(live.agent(), "add_note", {"text": "Called about the overdue invoice."})
    live.wait_for(body["id"], "executed")
    notes = [note["text"] for note in live.crm_account("4471")["notes"]]
    assert "Called about the overdue invoice." in notes
    assert Proposal.objects.get(pk=body["id"]).compensation["method"] == "DELETE"


def test_reading_4471_returns_no_email_and_audits_the_fields_not_the_values(live):
    response = live.agent().get("/api/v1/systems/crm/accounts/4471")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["name"] == "Northwind Traders" and "email" not in data
    event = AuditEvent.objects.get(verb="read", record_id="4471")
    assert event.input["fields"] == ["name", "status", "credit_limit", "notes"]
    assert "Northwind" not in str(event.input) + event.summary


def test_the_same_task_delivered_twice_writes_to_the_crm_once_and_records_the_duplicates(live):
    from approvals.tasks import execute_proposal
    from tests.faults import verbs, wait_until

    body = propose(live.agent(), "update_credit_limit", {"credit_limit": "2100.00"})
    for _ in range(3):
        execute_proposal.apply_async(args=[body["id"]])
    live.wait_for(body["id"], "executed")
    # The outbox's own message and three more: one execution, three duplicates, each counted as it is suppressed.
    wait_until(lambda: Proposal.objects.get(pk=body["id"]).duplicate_deliveries == 3, "three suppressed duplicates")
    assert live.crm_writes(body["id"]) == 1
    assert verbs(body["id"]) == ["proposed", "auto_approved", "executing", "executed"]  # a duplicate is no transition
    log = live.stack.processes["worker"].output()
    assert log.count(f"duplicate delivery of proposal {body['id']} suppressed") == 3


def test_many_auto_proposals_at_once_all_execute_exactly_once(live):
    """Web requests and worker executions interleave on the audit chain and proposal rows: no deadlock, no loss.

    (On PostgreSQL this once deadlocked: a worker's row lock also covered the joined system row.)"""
    from concurrent.futures import ThreadPoolExecutor

    clients = [live.agent() for _ in range(6)]

    def post(n: int) -> str:
        return propose(clients[n % len(clients)], "add_note", {"text": f"note {n}"}, record="4472")["id"]

    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(post, range(60)))
    for proposal_id in ids:
        live.wait_for(proposal_id, "executed", timeout=60)
    stats = live.crm_control("/_stats")
    assert [stats["writes_by_key"].get(proposal_id) for proposal_id in ids] == [1] * 60
    from audit.integrity import verify_chain

    assert verify_chain().ok
