"""Idempotency keys on the MCP propose tools: a client that retries a call gets the first proposal back, never a
second one; the same key is shared with the REST API's Idempotency-Key header, per agent."""

from __future__ import annotations

import pytest

from agents.mcp.calls import call_tool
from agents.mcp.tools import list_tools
from approvals.models import Proposal
from audit.models import AuditEvent
from governance.models import Agent

RAISE = {"record_id": "4471", "credit_limit": "5000.00", "reason": "paid on time"}  # +3,000: one approver


@pytest.fixture
def collections(crm_demo) -> Agent:
    return Agent.objects.get(slug="collections-agent")


def proposed_events() -> int:
    return AuditEvent.objects.filter(verb="proposed").count()


def test_every_propose_tool_offers_the_key_and_no_other_tool_does(collections):
    for tool in list_tools(collections):
        has_key = "idempotency_key" in tool.input_schema["properties"]
        assert has_key == tool.name.startswith("crm_propose_"), tool.name
        assert "idempotency_key" not in tool.input_schema.get("required", [])


def test_the_same_key_again_answers_with_the_first_proposal(collections):
    first = call_tool(collections, "crm_propose_update_credit_limit", {**RAISE, "idempotency_key": "retry-1"})
    again = call_tool(collections, "crm_propose_update_credit_limit", {**RAISE, "idempotency_key": "retry-1"})

    assert not first.is_error and not again.is_error, (first.structured, again.structured)
    assert again.structured["proposal"]["id"] == first.structured["proposal"]["id"]
    assert again.structured["outcome"] == "waiting_for_approval"
    assert again.message.startswith("Already proposed with this idempotency key.")
    assert Proposal.objects.count() == 1
    assert proposed_events() == 1


def test_without_a_key_a_retry_is_a_second_proposal(collections):
    call_tool(collections, "crm_propose_update_credit_limit", RAISE)
    call_tool(collections, "crm_propose_update_credit_limit", RAISE)
    assert Proposal.objects.count() == 2


def test_the_same_key_with_other_arguments_is_a_conflict(collections):
    call_tool(collections, "crm_propose_update_credit_limit", {**RAISE, "idempotency_key": "k"})
    other = call_tool(
        collections, "crm_propose_update_credit_limit", {**RAISE, "credit_limit": "9000.00", "idempotency_key": "k"}
    )
    assert other.is_error and other.structured["code"] == "idempotency_conflict", other.structured
    assert other.structured["status"] == 409
    assert Proposal.objects.count() == 1
    assert AuditEvent.objects.filter(verb="denied", outcome="idempotency_conflict", channel="mcp").count() == 1


def test_a_key_from_mcp_is_the_same_key_on_the_rest_api(collections, agent_client):
    first = call_tool(collections, "crm_propose_update_credit_limit", {**RAISE, "idempotency_key": "both-doors"})
    response = agent_client("collections-agent").post(
        "/api/v1/proposals",
        {
            "system": "crm",
            "action": "update_credit_limit",
            "record_id": "4471",
            "payload": {"credit_limit": "5000.00"},
            "reason": "paid on time",
        },
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="both-doors",
    )
    assert response.status_code == 200 and response["Idempotent-Replayed"] == "true", response.content
    assert response.json()["id"] == first.structured["proposal"]["id"]
    assert Proposal.objects.count() == 1


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "line\nbreak", "trailing newline\n", "c1\x85control", 42],
    ids=["empty", "too long", "control character", "trailing newline", "C1 control", "not a string"],
)
def test_a_bad_key_is_refused_with_the_argument_named_and_nothing_proposed(collections, key):
    result = call_tool(collections, "crm_propose_update_credit_limit", {**RAISE, "idempotency_key": key})
    assert result.is_error and result.structured["code"] == "invalid_payload", result.structured
    assert set(result.structured["errors"]) == {"idempotency_key"}
    assert not Proposal.objects.exists()
