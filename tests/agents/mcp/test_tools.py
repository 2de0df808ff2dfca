"""The MCP endpoint over real HTTP: the web process of the running stack, the official MCP Python client
(tests.agents.mcp.sessions)."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from mcp.shared.exceptions import MCPError

from approvals.killswitch import SwitchTarget, kill_switch_on
from approvals.models import Proposal
from audit.models import AuditEvent
from governance.models import Agent, ScopeGrant
from governance.services import agent_token_issue, agent_tokens_revoke
from tests.agents.mcp.sessions import db, mcp_session, run, token_for
from tests.faults import wait_until

DEMO_TOOLS = {
    "crm_read_account",
    "crm_propose_add_note",
    "crm_propose_send_statement",
    "crm_propose_set_status",
    "crm_propose_update_credit_limit",
    "get_proposal",
    "list_events",
    "wait_for_decision",
}
FIXED_TOOLS = {"get_proposal", "list_events", "wait_for_decision"}
READABLE = {"name", "status", "credit_limit", "notes"}


def list_tools(live, token: str) -> dict:
    async def scenario():
        async with mcp_session(live, token) as session:
            return {tool.name: tool for tool in (await session.list_tools()).tools}

    return run(scenario)


def call(live, token: str, name: str, arguments: dict):
    async def scenario():
        async with mcp_session(live, token) as session:
            return await session.call_tool(name, arguments)

    return run(scenario)


def raw_post(live, body: dict, **headers: str) -> httpx.Response:
    """One JSON-RPC message as a plain HTTP POST (the endpoint is stateless: no initialize needed)."""
    return httpx.post(
        f"{live.stack.web_url}/mcp",
        json=body,
        headers={"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25", **headers},
        timeout=30,
    )


def denials(agent_slug: str):
    return AuditEvent.objects.filter(verb="denied", actor=agent_slug, channel="mcp").order_by("id")


# --- The tool list ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_demo_agent_has_a_tool_per_grant_and_the_reporting_agent_fewer(live):
    tools = list_tools(live, token_for("collections-agent"))
    assert set(tools) == DEMO_TOOLS

    propose = tools["crm_propose_update_credit_limit"]
    assert set(propose.input_schema["properties"]) == {"credit_limit", "record_id", "reason", "idempotency_key"}
    assert set(propose.input_schema["required"]) == {"credit_limit", "record_id"}
    assert propose.input_schema["additionalProperties"] is False
    # What approval it may need, from the rule's bands.
    assert "under 500.00 USD: executes without approval" in propose.description
    assert "needs approval by approver within 4 h" in propose.description
    assert "second review by the Reviewers group within 24 h" in propose.description
    assert propose.annotations.read_only_hint is False and propose.annotations.destructive_hint is False
    assert tools["crm_propose_send_statement"].annotations.destructive_hint is True  # cannot be unsent

    read = tools["crm_read_account"]
    assert set(read.output_schema["properties"]["data"]["properties"]) == READABLE
    assert read.annotations.read_only_hint is True

    reporting = list_tools(live, token_for("reporting-agent"))
    assert set(reporting) == {"crm_read_account", *FIXED_TOOLS}


@pytest.mark.slow
def test_the_tool_list_follows_a_grant_change_on_the_next_request(live):
    token = token_for()

    async def scenario():
        async with mcp_session(live, token) as session:
            before = {tool.name for tool in (await session.list_tools()).tools}
            await db(ScopeGrant.objects.filter(agent__slug="collections-agent", access="write").delete)
            after = {tool.name for tool in (await session.list_tools()).tools}
            return before, after

    before, after = run(scenario)
    assert before == DEMO_TOOLS
    assert after == {"crm_read_account", *FIXED_TOOLS}


# --- Reads and proposals ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reading_4471_returns_only_granted_fields_and_is_audited_on_the_mcp_channel(live):
    result = call(live, token_for(), "crm_read_account", {"record_id": "4471"})

    assert not result.is_error, result.content
    body = result.structured_content
    assert body["outcome"] == "read" and body["record_id"] == "4471"
    assert set(body["data"]) == READABLE and "email" not in body["data"]
    assert body["data"]["credit_limit"] == "2000.00"
    assert "email" not in result.content[0].text
    event = AuditEvent.objects.filter(verb="read", record_id="4471").latest("id")
    assert event.channel == "mcp" and event.actor == "collections-agent"
    assert set(event.input["fields"]) == READABLE


@pytest.mark.slow
def test_a_300_dollar_raise_executes_through_the_same_services_as_the_api(live):
    result = call(
        live,
        token_for(),
        "crm_propose_update_credit_limit",
        {"record_id": "4471", "credit_limit": "2300.00", "reason": "paid on time for 12 months"},
    )

    assert not result.is_error, result.content
    body = result.structured_content
    assert body["outcome"] in ("executed", "approved")  # "executed" once the worker finished within the wait
    assert body["proposal"]["decision"]["mode"] == "auto"
    assert body["proposal"]["impact"] == {"amount": "300.00", "currency": "USD"}
    assert "waiting_for" not in body
    proposal = live.wait_for(body["proposal"]["id"], "executed")
    assert proposal.channel == "mcp" and proposal.reason == "paid on time for 12 months"
    assert live.crm_account("4471")["credit_limit"] == "2300.00"
    events = AuditEvent.objects.filter(proposal_id=proposal.pk).order_by("id")
    assert list(events.values_list("verb", flat=True)) == ["proposed", "auto_approved", "executing", "executed"]
    assert events.get(verb="proposed").channel == "mcp"


@pytest.mark.slow
def test_a_3000_dollar_raise_waits_for_the_approver_and_says_by_when(live):
    token = token_for()
    result = call(live, token, "crm_propose_update_credit_limit", {"record_id": "4471", "credit_limit": "5000.00"})

    assert not result.is_error, result.content
    body = result.structured_content
    assert body["outcome"] == "waiting_for_approval"
    assert body["proposal"]["status"] == "pending_approval"
    assert body["waiting_for"]["approver"] == "approver" and "approver_group" not in body["waiting_for"]
    due = datetime.fromisoformat(body["waiting_for"]["due_at"])
    assert timedelta(hours=3, minutes=59) < due - timezone.now() <= timedelta(hours=4)
    assert "Waiting for approval by approver, due by" in result.content[0].text
    assert live.crm_account("4471")["credit_limit"] == "2000.00"  # nothing written

    again = call(live, token, "get_proposal", {"proposal_id": body["proposal"]["id"]})
    assert again.structured_content["outcome"] == "waiting_for_approval"
    assert again.structured_content["waiting_for"] == body["waiting_for"]


@pytest.mark.slow
def test_another_agents_proposal_looks_like_a_missing_one(live):
    mine = call(live, token_for(), "crm_propose_update_credit_limit", {"record_id": "4471", "credit_limit": "5000.00"})
    theirs = call(
        live, token_for("reporting-agent"), "get_proposal", {"proposal_id": mine.structured_content["proposal"]["id"]}
    )
    assert theirs.is_error and theirs.structured_content["code"] == "not_found"


@pytest.mark.slow
def test_list_events_goes_through_the_event_queue_grants(live):
    result = call(live, token_for(), "list_events", {"limit": 10})
    assert not result.is_error, result.content
    assert result.structured_content["outcome"] == "events" and result.structured_content["events"] == []
    refused = call(live, token_for("reporting-agent"), "list_events", {"system": "legacy-inventory"})
    assert refused.is_error and refused.structured_content["code"] == "scope_denied"


# --- Refusals ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_ungranted_action_and_an_unknown_tool_are_refused_and_audited(live):
    ungranted = call(
        live,
        token_for("reporting-agent"),
        "crm_propose_update_credit_limit",
        {"record_id": "4471", "credit_limit": "2300.00"},
    )
    unknown = call(live, token_for(), "crm_read_invoice", {"record_id": "1"})

    assert ungranted.is_error and ungranted.structured_content["code"] == "scope_denied"
    assert ungranted.content[0].text.startswith("Refused (scope_denied):")
    assert denials("reporting-agent").last().outcome == "scope_denied"
    assert unknown.is_error and unknown.structured_content["code"] == "scope_denied"
    event = denials("collections-agent").last()
    assert event.outcome == "scope_denied" and event.input["tool"] == "crm_read_invoice"
    assert not Proposal.objects.exists()
    assert live.crm_account("4471")["credit_limit"] == "2000.00"


@pytest.mark.slow
def test_arguments_that_miss_the_schema_are_refused_with_field_errors(live):
    token = token_for()
    no_id = call(live, token, "crm_read_account", {"id": "4471"})
    bad_limit = call(
        live, token, "crm_propose_update_credit_limit", {"record_id": "4471", "credit_limit": "lots", "colour": "red"}
    )
    bad_id = call(live, token, "crm_propose_add_note", {"record_id": "../../admin", "text": "hi"})

    assert no_id.is_error and no_id.structured_content["code"] == "invalid_payload"
    assert set(no_id.structured_content["errors"]) == {"id", "record_id"}
    assert bad_limit.structured_content["code"] == "invalid_payload"
    assert set(bad_limit.structured_content["errors"]) == {"credit_limit", "colour"}
    assert bad_id.structured_content["code"] == "invalid_payload"
    assert set(bad_id.structured_content["errors"]) == {"record_id"}
    assert list(denials("collections-agent").values_list("outcome", flat=True)) == ["invalid_payload"] * 3
    assert not Proposal.objects.exists()


@pytest.mark.slow
def test_a_disabled_agent_is_refused_mid_session_and_the_refusal_audited(live):
    agent = Agent.objects.get(slug="collections-agent")
    owner = get_user_model().objects.get(username="owner")

    token = token_for()

    async def scenario():
        async with mcp_session(live, token) as session:
            before = await session.call_tool("crm_read_account", {"record_id": "4471"})
            await db(
                kill_switch_on, target=SwitchTarget(agent=agent), reason="runaway loop", user=owner, channel="admin"
            )
            after = await session.call_tool(
                "crm_propose_update_credit_limit", {"record_id": "4471", "credit_limit": "2300.00"}
            )
            unknown = await session.call_tool("crm_read_invoice", {"record_id": "1"})
            with pytest.raises(MCPError) as listing:
                await session.list_tools()
            return before, after, unknown, listing.value

    before, after, unknown, listing = run(scenario)
    assert not before.is_error
    assert after.is_error and after.structured_content["code"] == "agent_disabled"
    assert "runaway loop" in after.structured_content["message"]
    assert unknown.structured_content["code"] == "agent_disabled"  # the kill switch answers before the scope
    assert listing.data["code"] == "agent_disabled"
    assert set(denials("collections-agent").values_list("outcome", flat=True)) == {"agent_disabled"}
    assert not Proposal.objects.exists()


@pytest.mark.slow
def test_a_token_revoked_mid_session_stops_the_next_call(live):
    agent = Agent.objects.get(slug="collections-agent")

    token = token_for()

    async def scenario():
        async with mcp_session(live, token) as session:
            before = await session.call_tool("crm_read_account", {"record_id": "4471"})
            await db(agent_tokens_revoke, agent=agent, channel="command", reason="leaked")
            with pytest.raises(MCPError):
                await session.call_tool(
                    "crm_propose_update_credit_limit", {"record_id": "4471", "credit_limit": "2300.00"}
                )
            return before

    assert not run(scenario).is_error
    assert not Proposal.objects.exists()


@pytest.mark.slow
def test_a_bad_token_answers_401_with_www_authenticate(live):
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    for headers in ({"Authorization": "Bearer gh_000000000000_nope"}, {"Authorization": "Basic Zm9vOmJhcg=="}, {}):
        response = raw_post(live, listing, **headers)
        assert response.status_code == 401, response.text
        assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')

    async def scenario():
        async with mcp_session(live, "gh_000000000000_nope"):
            pass

    with pytest.raises(ExceptionGroup) as refused:  # the SDK reports the 401 from inside its task group
        run(scenario)
    assert refused.group_contains(MCPError)


@pytest.mark.slow
def test_a_token_limited_to_networks_is_refused_from_elsewhere_as_unauthenticated_and_audited(live):
    """The stack's web process sees this test's calls come from 127.0.0.1: a token for 10.0.0.0/8 is refused there
    exactly as an unknown token is, and the refusal is audited on the MCP channel; one for 127.0.0.0/8 works."""
    agent = Agent.objects.get(slug="collections-agent")
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    _, elsewhere = agent_token_issue(agent=agent, channel="command", networks=["10.0.0.0/8"])
    response = raw_post(live, listing, Authorization=f"Bearer {elsewhere}")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith(
        'Bearer error="invalid_token"'
    )
    refusal = AuditEvent.objects.get(verb="denied", outcome="network_refused")
    assert refusal.channel == "mcp" and refusal.input["source"] == "127.0.0.1" and elsewhere not in str(refusal.input)

    _, here = agent_token_issue(agent=agent, channel="command", networks=["127.0.0.0/8"])
    assert raw_post(live, listing, Authorization=f"Bearer {here}").status_code == 200


@pytest.mark.slow
def test_a_host_or_origin_outside_allowed_hosts_is_refused(live):
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    token = {"Authorization": f"Bearer {token_for()}"}
    assert raw_post(live, listing, Host="evil.example", **token).status_code == 421
    assert raw_post(live, listing, Origin="http://evil.example", **token).status_code == 403
    allowed = raw_post(live, listing, Origin=live.stack.web_url, **token)
    assert allowed.status_code == 200 and allowed.json()["result"]["tools"]


@pytest.mark.slow
def test_a_body_over_the_apis_size_limit_answers_413(live):
    arguments = {"record_id": "4471", "text": "x" * 70_000}
    huge = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "crm_propose_add_note", "arguments": arguments},
    }
    response = raw_post(live, huge, Authorization=f"Bearer {token_for()}")
    assert response.status_code == 413


@pytest.mark.slow
def test_a_client_that_disconnects_mid_call_leaves_a_consistent_proposal(live):
    live.crm_control("/_control/mode", {"mode": "slow", "delay": 1.5})  # the record read inside the call takes 1.5 s
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{live.stack.web_url}/mcp",
                json={
                    "jsonrpc": "2.0",
                    "id": 7,
                    "method": "tools/call",
                    "params": {
                        "name": "crm_propose_update_credit_limit",
                        "arguments": {"record_id": "4471", "credit_limit": "5000.00"},
                    },
                },
                headers={
                    "Authorization": f"Bearer {token_for()}",
                    "Accept": "application/json, text/event-stream",
                    "MCP-Protocol-Version": "2025-11-25",
                },
                timeout=httpx.Timeout(10, read=0.5),
            )
        wait_until(Proposal.objects.exists, "the proposal the disconnected call made", timeout=20)
    finally:
        live.crm_control("/_control/mode", {"mode": "normal"})

    # The call finished on the server although nobody was listening: one whole proposal, with its audit event.
    proposal = Proposal.objects.get()
    assert proposal.status == "pending_approval" and proposal.channel == "mcp"
    assert list(AuditEvent.objects.filter(proposal_id=proposal.pk).values_list("verb", flat=True)) == ["proposed"]


# --- The tool catalogue without a server ------------------------------------------------------------------------


@pytest.mark.django_db
def test_tool_names_are_stable_and_follow_the_grants(demo):
    from agents.mcp import tools

    collections = Agent.objects.get(slug="collections-agent")
    assert {tool.name for tool in tools.list_tools(collections)} == DEMO_TOOLS
    reporting = Agent.objects.get(slug="reporting-agent")
    assert {tool.name for tool in tools.list_tools(reporting)} == {"crm_read_account", *FIXED_TOOLS}
    assert tools.resolve("crm_propose_update_credit_limit") == tools.ToolTarget(
        "propose", "crm", "accounts", "update_credit_limit"
    )
    assert tools.resolve("crm_staging_read_account") == tools.ToolTarget("read", "crm-staging", "accounts")
    assert tools.resolve("legacy_inventory_read_stock_event") is None  # event-queue data: list_events reads it
    assert tools.resolve("crm_read_invoice") is None


@pytest.mark.django_db
def test_an_edited_rule_loses_its_sign_off_and_the_description_says_a_person_decides(demo):
    from agents.mcp import tools
    from governance.models import ActionType, ThresholdBand

    ThresholdBand.objects.filter(rule__name="Credit limit changes on crm", max_amount=500).update(max_amount=900)
    ThresholdBand.objects.filter(rule__name="Credit limit changes on crm", min_amount=500).update(min_amount=900)
    action = ActionType.objects.select_related("system", "resource").get(system__slug="crm", name="update_credit_limit")
    text = tools.approval_text(action)
    assert "is not signed off by the business owner" in text and "a person in the approvers' group decides" in text


@pytest.mark.django_db
def test_a_payload_schema_that_cannot_be_merged_is_taken_as_a_payload_argument(demo):
    from agents.mcp import tools
    from governance.models import ActionType

    action = ActionType.objects.get(system__slug="crm", name="add_note")
    action.payload_schema = {
        "type": "object",
        "properties": {"reason": {"type": "string"}},
        "required": ["reason"],
        "additionalProperties": False,
    }
    action.save()
    listed = {tool.name: tool for tool in tools.list_tools(Agent.objects.get(slug="collections-agent"))}
    schema = listed["crm_propose_add_note"].input_schema
    assert set(schema["properties"]) == {"record_id", "reason", "payload", "idempotency_key"}
    assert schema["properties"]["payload"] == action.payload_schema
    assert tools.resolve("crm_propose_add_note").nested_payload


@pytest.mark.django_db
def test_the_global_stop_refuses_the_tool_list(demo):
    from agents.mcp import tools
    from core.errors import SystemFrozen

    kill_switch_on(target=SwitchTarget(), reason="incident 42", channel="command")  # the global stop, as doors pull it
    with pytest.raises(SystemFrozen, match="incident 42"):
        tools.list_tools(Agent.objects.get(slug="collections-agent"))
    assert AuditEvent.objects.filter(verb="denied", channel="mcp", outcome="system_frozen").exists()


@pytest.mark.django_db
def test_a_record_id_with_a_trailing_newline_is_refused_before_anything_is_read(demo):
    """JSON Schema's `$` (Python's, which jsonschema uses) allows a final newline: the id is matched whole as well."""
    from agents.mcp.calls import call_tool

    agent = Agent.objects.get(slug="collections-agent")
    result = call_tool(agent, "crm_read_account", {"record_id": "4471\n"})
    assert result.is_error and result.structured["code"] == "invalid_payload", result.structured
    assert set(result.structured["errors"]) == {"record_id"}
    assert not AuditEvent.objects.filter(verb="read").exists()
