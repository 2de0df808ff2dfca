"""A read-only grant against every write path, REST and MCP: each refused, nothing proposed, every refusal audited.

(Per-action REST refusals are also in tests/approvals/test_api.py; this is the whole sweep in one scenario.)"""

from __future__ import annotations

import pytest

from agents.mcp.calls import call_tool
from agents.mcp.tools import list_tools
from approvals.models import Proposal
from audit.models import AuditEvent
from governance.models import Agent
from tests.factories import post_proposal as propose

PROPOSALS = "/api/v1/proposals"
ACTIONS = {
    "update_credit_limit": {"credit_limit": "2100.00"},
    "add_note": {"text": "Called about the invoice."},
    "set_status": {"status": "on_hold"},
    "send_statement": {"period": "2024-05"},
}


@pytest.fixture
def mark(crm_demo) -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def test_the_reporting_agent_is_refused_on_every_api_write_path_and_each_refusal_audited(crm_demo, agent_client):
    collections, reporting = agent_client("collections-agent"), agent_client("reporting-agent")
    theirs = propose(collections, "update_credit_limit", {"credit_limit": "5000.00"})
    assert theirs.status_code == 201, theirs.content
    mark = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()

    for action, payload in ACTIONS.items():
        response = propose(reporting, action, payload)
        assert response.status_code == 403, (action, response.content)
        assert response.json()["code"] == "scope_denied"
    cancel = reporting.post(f"{PROPOSALS}/{theirs.json()['id']}/cancel")
    assert cancel.status_code == 404 and cancel.json()["code"] == "not_found"

    assert Proposal.objects.count() == 1
    assert Proposal.objects.get().status == "pending_approval"
    refusals = AuditEvent.objects.filter(id__gt=mark).order_by("id")
    assert set(refusals.values_list("verb", "actor")) == {("denied", "reporting-agent")}
    denied_actions = [event.input.get("action") for event in refusals.filter(outcome="scope_denied")]
    assert sorted(denied_actions) == sorted(ACTIONS)


def test_the_reporting_agent_is_refused_every_propose_tool_over_mcp_and_each_refusal_audited(crm_demo, mark):
    reporting = Agent.objects.get(slug="reporting-agent")
    propose_tools = sorted(
        tool.name
        for tool in list_tools(Agent.objects.get(slug="collections-agent"))
        if tool.name.startswith("crm_propose_")
    )
    assert len(propose_tools) == len(ACTIONS)
    assert not {tool.name for tool in list_tools(reporting)} & set(propose_tools)  # not even offered

    for name in propose_tools:
        result = call_tool(reporting, name, {"record_id": "4471", "reason": "weekly report"})
        assert result.is_error and result.structured["code"] == "scope_denied", (name, result.structured)

    assert not Proposal.objects.exists()
    refusals = AuditEvent.objects.filter(id__gt=mark)
    assert set(refusals.values_list("verb", "outcome", "actor", "channel")) == {
        ("denied", "scope_denied", "reporting-agent", "mcp")
    }
    assert sorted(event.input["action"] for event in refusals) == sorted(ACTIONS)
