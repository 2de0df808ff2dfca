"""The impact through the MCP tools, against the real sample CRM: the proposal in a tool's result and its message in
plain words show the amount only when the agent's read grant covers credit_limit, as the REST API's answers do; and
an answer stored for an idempotency key replays at the other door as it was shown."""

from __future__ import annotations

import pytest

from agents.mcp.calls import call_tool
from governance.models import Agent
from tests.agents.impact import RAISE, assert_hidden, assert_no_amount, assert_shown, narrow, widen
from tests.agents.mcp.test_tools import call, token_for

PROPOSE = "crm_propose_update_credit_limit"


@pytest.fixture
def collections(crm_demo) -> Agent:
    return Agent.objects.get(slug="collections-agent")


def raise_limit(agent: Agent, **extra: str):
    result = call_tool(agent, PROPOSE, {"record_id": "4471", **RAISE, **extra})
    assert not result.is_error, result.structured
    return result


@pytest.mark.parametrize("how", ["without-the-field", "without-a-read-grant"])
def test_a_propose_tool_hides_the_amount_in_its_result_and_its_message(collections, how):
    narrow(how)
    result = raise_limit(collections)

    assert result.structured["outcome"] == "waiting_for_approval"
    assert_hidden(result.structured["proposal"])
    assert "(impact" not in result.message and "Why: By rule" in result.message
    assert_no_amount(result.message)
    assert result.structured["message"] == result.message

    again = call_tool(collections, "get_proposal", {"proposal_id": result.structured["proposal"]["id"]})
    assert_hidden(again.structured["proposal"])
    assert_no_amount(again.message)


def test_with_credit_limit_granted_the_tool_shows_the_amount(collections):
    result = raise_limit(collections)
    assert_shown(result.structured["proposal"])
    assert "(impact 3000.00 USD)" in result.message and "3000.00 USD falls in band" in result.message


def test_an_answer_stored_at_the_mcp_door_replays_at_the_rest_door_as_it_was_shown(collections, agent_client):
    narrow()
    first = raise_limit(collections, idempotency_key="hidden-then")
    assert_hidden(first.structured["proposal"])
    widen()

    response = agent_client("collections-agent").post(
        "/api/v1/proposals",
        {"system": "crm", "action": "update_credit_limit", "record_id": "4471", "payload": RAISE, "reason": ""},
        content_type="application/json",
        headers={"Idempotency-Key": "hidden-then"},
    )
    assert response.status_code == 200 and response["Idempotent-Replayed"] == "true", response.content
    assert_hidden(response.json())
    assert response.json()["id"] == first.structured["proposal"]["id"]
    # The MCP door's own replay tells where the proposal stands now, with the grants of now.
    now = call_tool(collections, PROPOSE, {"record_id": "4471", **RAISE, "idempotency_key": "hidden-then"})
    assert now.message.startswith("Already proposed with this idempotency key.")
    assert_shown(now.structured["proposal"])


@pytest.mark.slow
def test_over_http_an_auto_approved_proposal_waited_for_hides_the_amount_too(live):
    """The server waits a moment for an auto-approved proposal to execute and answers with it as it stands then:
    that answer, made anew, hides the amount as the first one does."""
    narrow()
    result = call(live, token_for(), PROPOSE, {"record_id": "4471", "credit_limit": "2300.00"})  # +300: auto

    assert not result.is_error, result.content
    body = result.structured_content
    assert body["outcome"] in ("executed", "approved") and body["proposal"]["decision"]["mode"] == "auto"
    assert body["proposal"]["impact"] == {"amount": None, "currency": "USD"}
    assert body["proposal"]["decision"]["band"] is None
    for text in (result.content[0].text, result.content[1].text):
        assert "it executes without approval" in text
        assert_no_amount(text.replace("2300.00", "<payload>"))  # the payload is the agent's own
        assert "300.00" not in text.replace("2300.00", "<payload>")
    live.wait_for(body["proposal"]["id"], "executed")
