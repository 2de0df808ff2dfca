"""The agent's readable records as MCP resources (`gatehouse://crm/accounts/4471`), over real HTTP with the official
MCP client: one template per granted read resource, reads through the same service as the read tool and the REST
read (granted fields only, the record-id rule, the audit event), refusals as JSON-RPC errors with the contract's code.
"""

from __future__ import annotations

import json

import pytest
from mcp.shared.exceptions import MCPError

from audit.models import AuditEvent
from governance.models import ScopeGrant
from tests.agents.mcp.sessions import db, mcp_session, run, token_for

READABLE = {"name", "status", "credit_limit", "notes"}
TEMPLATE = "gatehouse://crm/accounts/{record_id}"


def templates(live, token: str) -> dict:
    async def scenario():
        async with mcp_session(live, token) as session:
            listed = await session.list_resource_templates()
            return {template.uri_template: template for template in listed.resource_templates}

    return run(scenario)


def read(live, token: str, *uris: str) -> list:
    """Each URI's contents, or the MCPError that refused it."""

    async def scenario():
        answers = []
        async with mcp_session(live, token) as session:
            for uri in uris:
                try:
                    answers.append(await session.read_resource(uri))
                except MCPError as refused:
                    answers.append(refused)
        return answers

    return run(scenario)


@pytest.mark.slow
def test_the_server_declares_resources_and_logging_and_lists_no_records(live):
    token = token_for()

    async def scenario():
        async with mcp_session(live, token) as session:
            return session.server_capabilities, await session.list_resources()

    capabilities, listed = run(scenario)
    assert capabilities.resources is not None and not capabilities.resources.subscribe
    assert capabilities.logging is not None
    assert listed.resources == []  # records are not enumerable: the templates say what may be read


@pytest.mark.slow
def test_one_template_per_granted_read_resource_naming_only_the_granted_fields(live):
    listed = templates(live, token_for())

    assert set(listed) == {TEMPLATE}  # not crm-staging (no grant), not legacy-inventory (events, not records)
    template = listed[TEMPLATE]
    assert template.mime_type == "application/json" and template.name == "crm/accounts"
    assert "name, status, credit_limit, notes" in template.description and "email" not in template.description

    ScopeGrant.objects.filter(agent__slug="collections-agent", access="read", system__slug="crm").update(
        fields=["name", "status"]
    )
    assert "name, status. Every read" in templates(live, token_for())[TEMPLATE].description
    ScopeGrant.objects.filter(agent__slug="collections-agent", access="read", system__slug="crm").delete()
    assert templates(live, token_for()) == {}


@pytest.mark.slow
def test_reading_a_record_returns_only_granted_fields_and_is_audited_on_the_mcp_channel(live):
    (answer,) = read(live, token_for(), "gatehouse://crm/accounts/4471")

    (content,) = answer.contents
    assert content.uri == "gatehouse://crm/accounts/4471" and content.mime_type == "application/json"
    body = json.loads(content.text)
    assert body["system"] == "crm" and body["resource"] == "accounts" and body["record_id"] == "4471"
    assert set(body["data"]) == READABLE and body["data"]["credit_limit"] == "2000.00"
    event = AuditEvent.objects.filter(verb="read", record_id="4471").latest("id")
    assert event.channel == "mcp" and event.actor == "collections-agent" and event.outcome == "ok"
    assert set(event.input["fields"]) == READABLE


@pytest.mark.slow
def test_refused_reads_are_json_rpc_errors_with_the_contracts_code(live):
    ungranted, unknown_system, unknown_scheme, bad_id, no_record, missing = read(
        live,
        token_for(),
        "gatehouse://crm-staging/accounts/4471",
        "gatehouse://nowhere/accounts/4471",
        "file:///etc/passwd",
        "gatehouse://crm/accounts/..",
        "gatehouse://crm/accounts",
        "gatehouse://crm/accounts/9999",
    )

    assert isinstance(ungranted, MCPError) and ungranted.data["code"] == "scope_denied"
    assert ungranted.error.code == -32001 and ungranted.data["status"] == 403
    for not_found in (unknown_system, unknown_scheme, missing):
        assert isinstance(not_found, MCPError) and not_found.data["code"] == "not_found", not_found
        assert not_found.error.code == -32002  # the protocol's "resource not found"
    for invalid in (bad_id, no_record):
        assert isinstance(invalid, MCPError) and invalid.data["code"] == "invalid_payload", invalid
        assert invalid.error.code == -32602 and set(invalid.data["errors"]) == {"record_id"}
    denials = AuditEvent.objects.filter(verb="denied", actor="collections-agent", channel="mcp").order_by("id")
    assert list(denials.values_list("outcome", flat=True)) == ["scope_denied", "invalid_payload", "invalid_payload"]
    assert denials.last().input["uri"] == "gatehouse://crm/accounts"
    assert AuditEvent.objects.get(verb="read", record_id="9999").outcome == "not_found"  # the connector was asked


@pytest.mark.slow
def test_a_stopped_agent_is_refused_its_templates_and_reads(live):
    from approvals.killswitch import SwitchTarget, kill_switch_on
    from governance.models import Agent

    token = token_for()

    async def scenario():
        async with mcp_session(live, token) as session:
            await db(
                kill_switch_on,
                target=SwitchTarget(agent=await db(Agent.objects.get, slug="collections-agent")),
                reason="runaway loop",
                channel="command",
            )
            refused = []
            for request in (session.list_resource_templates(), session.read_resource("gatehouse://crm/accounts/1")):
                with pytest.raises(MCPError) as caught:
                    await request
                refused.append(caught.value.data["code"])
            return refused

    assert run(scenario) == ["agent_disabled", "agent_disabled"]
    assert not AuditEvent.objects.filter(verb="read").exists()
