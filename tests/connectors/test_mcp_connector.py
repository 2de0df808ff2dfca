"""Downstream MCP servers as Gatehouse systems, against real servers nobody here wrote: the official memory server
from npm and `mcp-server-time` from PyPI, each started by the connector as a stdio process."""

from __future__ import annotations

import io
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command

from approvals.choices import ProposalStatus
from approvals.decisions import proposal_approve
from approvals.models import Proposal
from audit.models import AuditEvent
from connectors.base import PermanentError, RecordNotFound, TransientError
from connectors.mcp.connector import McpConnector, render
from connectors.mcp.importer import import_tools
from governance.choices import Access, BandMode, Compensation, ConnectorKind, IntegrationPattern, WriteMode
from governance.models import ActionType, Agent, Resource, ScopeGrant, System, ThresholdBand, ThresholdRule
from governance.services import threshold_rule_sign_off
from tests.conftest import REQUIRE_SERVICES

ROOT = Path(__file__).resolve().parents[2]
MEMORY_SERVER = ROOT / "sandbox" / "mcp_servers" / "node_modules" / "@modelcontextprotocol" / "server-memory"
TIME_SERVER = Path(sys.executable).parent / "mcp-server-time"
User = get_user_model()


def need(path: Path, what: str) -> None:
    if path.exists():
        return
    message = f"{what} is not installed ({path}): run make install (needs npm for the npm servers)"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


def memory_config(tmp_path: Path, **extra) -> dict:
    need(MEMORY_SERVER, "@modelcontextprotocol/server-memory")
    return {
        "transport": "stdio",
        "command": "node",
        "args": [str(MEMORY_SERVER / "dist" / "index.js")],
        "env": {"MEMORY_FILE_PATH": str(tmp_path / "memory.jsonl")},
        "timeout": 15,
        "reads": {"entities": {"tool": "open_nodes", "arguments": {"names": ["{record_id}"]}, "result": "entities.0"}},
        **extra,
    }


def mcp_system(f, config: dict, slug: str = "memory") -> System:
    system = f.SystemFactory(
        slug=slug,
        connector_kind=ConnectorKind.MCP,
        integration_pattern=IntegrationPattern.MCP,
        connector_config=config,
        write_mode=WriteMode.ENABLED,
    )
    system.full_clean()
    return system


def test_templates_put_values_where_the_placeholders_stand():
    template = {"a": ["{record_id}"], "b": "{payload.items}", "c": "note on {record_id}", "d": "{payload}"}
    assert render(template, record_id="Acme", payload={"items": [1, 2]}) == {
        "a": ["Acme"],
        "b": [1, 2],
        "c": "note on Acme",
        "d": {"items": [1, 2]},
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"transport": "carrier-pigeon"}, 'Set "transport"'),
        ({"transport": "stdio"}, 'needs "command"'),
        ({"transport": "stdio", "command": "node", "args": "x"}, '"args" must be a list'),
        ({"transport": "http", "url": "ftp://x"}, 'needs "url"'),
        ({"transport": "http", "url": "http://tools.example.com/mcp", "timeout": 0}, '"timeout"'),
        ({"transport": "http", "url": "http://tools.example.com/mcp", "reads": {"r": {"tool": ""}}}, "reads.r"),
        (
            {"transport": "http", "url": "http://tools.example.com/mcp", "colour": "red"},
            "Unknown connector setting(s): colour",
        ),
    ],
)
def test_a_bad_configuration_is_refused_when_the_system_is_saved(f, config, message):
    system = f.SystemFactory.build(
        slug="bad", connector_kind=ConnectorKind.MCP, connector_config=config, owner=f.UserFactory()
    )
    with pytest.raises(ValidationError) as caught:
        system.full_clean()
    assert message in " ".join(caught.value.message_dict["connector_config"])


@pytest.mark.slow
@pytest.mark.django_db
def test_importing_the_memory_servers_tools_makes_its_writes_actions_and_lists_its_reads(f, tmp_path):
    system = mcp_system(f, memory_config(tmp_path))

    report = import_tools(system=system)

    assert set(report.created) == {
        "create_entities",
        "create_relations",
        "add_observations",
        "delete_entities",
        "delete_observations",
        "delete_relations",
    }
    assert set(report.read_candidates) == {"read_graph", "search_nodes", "open_nodes"}
    action = ActionType.objects.get(system=system, name="create_entities")
    assert action.payload_schema["additionalProperties"] is False and "entities" in action.payload_schema["properties"]
    assert action.compensation == Compensation.NONE and action.not_reversible_note  # until the owner says how
    assert import_tools(system=system).created == []  # importing again adds nothing
    assert AuditEvent.objects.filter(verb="tools_imported", system=system).count() == 2
    out = io.StringIO()
    call_command("import_mcp_tools", "memory", stdout=out)
    assert "read-only tools" in out.getvalue()


@pytest.mark.slow
@pytest.mark.django_db
def test_reads_writes_and_compensation_on_the_memory_server(f, tmp_path):
    system = mcp_system(f, memory_config(tmp_path))
    resource = Resource.objects.create(system=system, name="entities", label="entity", fields=[])
    action = entity_action(system, resource)
    connector = McpConnector(system, None)

    with pytest.raises(RecordNotFound):
        connector.read("entities", "Acme")
    result = connector.execute(action, "Acme", {"entityType": "company", "observations": ["pays late"]}, "k1")
    assert connector.read("entities", "Acme") == {
        "name": "Acme",
        "entityType": "company",
        "observations": ["pays late"],
    }
    assert result.before == {} and result.compensation == {
        "tool": "delete_entities",
        "arguments": {"entityNames": ["Acme"]},
    }
    connector.compensate(action, "Acme", result.compensation, "reverse-k1")
    with pytest.raises(RecordNotFound):
        connector.read("entities", "Acme")
    assert connector.health().ok


def entity_action(system: System, resource: Resource) -> ActionType:
    action = ActionType(
        system=system,
        resource=resource,
        name="create_entity",
        payload_schema={
            "type": "object",
            "properties": {
                "entityType": {"type": "string"},
                "observations": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["entityType"],
            "additionalProperties": False,
        },
        operation={
            "tool": "create_entities",
            "arguments": {
                "entities": [
                    {
                        "name": "{record_id}",
                        "entityType": "{payload.entityType}",
                        "observations": "{payload.observations}",
                    }
                ]
            },
            "compensate": {"tool": "delete_entities", "arguments": {"entityNames": ["{record_id}"]}},
        },
        compensation=Compensation.DELETE_CREATED,
    )
    action.full_clean()
    action.save()
    return action


@pytest.mark.slow
@pytest.mark.django_db
def test_a_python_mcp_server_from_pypi_serves_governed_reads(f, tmp_path):
    need(TIME_SERVER, "mcp-server-time (pip, dev extra)")
    config = {
        "transport": "stdio",
        "command": str(TIME_SERVER),
        "args": ["--local-timezone", "UTC"],
        "timeout": 15,
        "reads": {"clocks": {"tool": "get_current_time", "arguments": {"timezone": "{record_id}"}}},
    }
    system = mcp_system(f, config, slug="world-clock")

    reading = McpConnector(system, None).read("clocks", "Europe/Paris", fields=["timezone", "datetime"])

    assert reading["timezone"] == "Europe/Paris" and reading["datetime"].startswith(str(time.gmtime().tm_year))
    report = import_tools(system=system)
    assert "get_current_time" in report.created + report.read_candidates


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("import sys; sys.exit(3)", "tool list failed: the MCP server"),  # dies before answering
        ("import time; time.sleep(60)", "did not answer within 2 s"),  # hangs
        ("import sys\nfor line in sys.stdin: print('{not json', flush=True)", "MCP server"),  # garbage
    ],
    ids=["dies", "hangs", "malformed"],
)
def test_a_server_that_dies_hangs_or_answers_garbage_fails_clearly_within_the_timeout(f, settings, script, expected):
    settings.GATEHOUSE_MCP_COMMANDS = [f"{sys.executable} -c"]
    system = mcp_system(
        f, {"transport": "stdio", "command": sys.executable, "args": ["-c", script], "timeout": 2}, slug="broken"
    )
    started = time.monotonic()
    with pytest.raises(TransientError, match=expected):
        McpConnector(system, None).list_tools()
    assert time.monotonic() - started < 6


@pytest.mark.django_db
def test_a_tool_that_refuses_is_a_permanent_error(f, tmp_path):
    system = mcp_system(f, memory_config(tmp_path))
    with pytest.raises(PermanentError, match="tool open_nodes refused"):
        McpConnector(system, None)._call("open_nodes", {"names": "not a list"})


# --- On the running stack ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_a_write_on_the_memory_server_proposed_approved_executed_and_reversed(live, f, tmp_path):
    """Through the agent API and the stack's worker: the MCP server is a subprocess of the worker."""
    system = mcp_system(f, memory_config(tmp_path), slug="memory")
    owner = system.owner
    resource = Resource.objects.create(
        system=system, name="entities", label="entity", fields=["name", "entityType", "observations"]
    )
    action = entity_action(system, resource)
    approver = User.objects.get(username="approver")
    rule = ThresholdRule.objects.create(system=system, name="Memory writes", currency="USD")
    ThresholdBand.objects.create(
        rule=rule, min_amount=Decimal(0), mode=BandMode.SINGLE, approver=approver, sla=timedelta(hours=4)
    )
    threshold_rule_sign_off(rule=rule, user=owner, channel="command")
    agent = Agent.objects.create(slug="research-agent", name="Research agent", owner=owner)
    for access, terms in ((Access.READ, {"fields": []}), (Access.WRITE, {"actions": [action.name]})):
        ScopeGrant.objects.create(
            agent=agent,
            system=system,
            resource=resource,
            access=access,
            justification="test",
            granted_by=owner,
            **terms,
        )
    client = live.agent("research-agent")

    response = client.post(
        "/api/v1/proposals",
        json={
            "system": "memory",
            "action": "create_entity",
            "record_id": "Acme-Corp",
            "payload": {"entityType": "company", "observations": ["asked for a discount"]},
            "reason": "remember the customer",
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "pending_approval"
    proposal_id = response.json()["id"]
    proposal_approve(proposal_id=proposal_id, user=approver, channel="admin")
    live.wait_for(proposal_id, "executed", timeout=60)

    read = client.get("/api/v1/systems/memory/entities/Acme-Corp")
    assert read.status_code == 200, read.text
    assert read.json()["data"]["observations"] == ["asked for a discount"]

    out = io.StringIO()
    call_command("reverse_writes", "--agent", "research-agent", "--execute", "--timeout", "60", stdout=out)

    assert Proposal.objects.get(pk=proposal_id).status == ProposalStatus.REVERSED, out.getvalue()
    assert client.get("/api/v1/systems/memory/entities/Acme-Corp").status_code == 404
    assert AuditEvent.objects.filter(proposal_id=proposal_id, verb="reversed").exists()
