"""Downstream errors never reach agents, proposals, e-mails or the audit trail verbatim (DESIGN.md, "The control plane
is a privilege boundary"; CONTRACT.md: problem bodies name the system, the status and a reference).

Real systems that echo the credential they were sent - the sample CRM's echo mode, a careless MCP server started as a
stdio process, the SOAP inventory's echo fault - are failed through every door: the agent's read (problem detail and
MCP tool result), an auto-approved write (failure reason, audit events, the failure e-mail), a reversal step and a
credential rotation's health check. What comes back names the system, the status and a reference; the reference
leads to exactly one WARNING line of the connectors' loggers, which holds what the system said with the credential
redacted.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest

from agents.mcp.calls import call_tool
from approvals.execution import proposal_execute
from approvals.models import Proposal, ReversalStep
from approvals.reversal import reversal_plan
from approvals.reversal_rounds import reversal_run_here
from audit.models import AuditEvent
from connectors import limits
from connectors.base import PermanentError, RecordNotFound, TransientError
from connectors.errors import REDACTED, Redactor
from connectors.mcp.connector import McpConnector
from connectors.registry import connector_for
from connectors.services import credential_rotate, credential_set
from governance.choices import Access, Compensation, ConnectorKind, ImpactKind, IntegrationPattern
from governance.models import Agent, System
from governance.services import threshold_rule_sign_off
from sandbox.testing import crm_control
from tests import factories
from tests.connectors.test_soap import TOKEN as INVENTORY_TOKEN
from tests.connectors.test_soap import make_system as soap_system
from tests.connectors.test_soap import start_inventory
from tests.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
TIME_SERVER = Path(sys.executable).parent / "mcp-server-time"
REFERENCE = re.compile(r"\(reference ([0-9a-f]{10})\)")


# --- What the checks look for ------------------------------------------------------------------------------------


def references(text: str) -> list[str]:
    return REFERENCE.findall(text)


def logged(caplog: pytest.LogCaptureFixture, reference: str) -> str:
    """The one WARNING line of a connectors.* logger that holds `reference`."""
    lines = [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("connectors.") and record.levelno == logging.WARNING
        if reference in record.getMessage()
    ]
    assert len(lines) == 1, (reference, lines)
    return lines[0]


def assert_named(where: str, text: str, *, system: str, status: str, secret: str, said: str, caplog) -> str:
    """`text` names the system, the status and a reference whose log line holds what the system said, redacted;
    neither the secret nor the system's words are in `text`. Returns the log line."""
    assert secret not in text and said not in text, (where, text)
    assert system in text and status in text, (where, text)
    found = references(text)
    assert found, (where, text)
    line = logged(caplog, found[-1])
    assert said in line and secret not in line and REDACTED in line, (where, line)
    return line


def audit_text(since: int) -> str:
    return json.dumps(list(AuditEvent.objects.filter(pk__gt=since).values()), default=str)


def last_event_id() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


# --- The redactor ------------------------------------------------------------------------------------------------


def test_the_redactor_cuts_the_secret_in_its_usual_forms_and_every_credential_header_value() -> None:
    secret = "s3cr3t/+&=x"
    redact = Redactor([secret, "Basic dXNlcjpzM2NyM3Q="], ["X-Inventory-Key"])
    text = (
        f"raw {secret} url s3cr3t%2F%2B%26%3Dx json {json.dumps(secret)} b64 czNjcjN0LysmPXg= "
        "Authorization: Bearer someone-elses-token\r\nContent-Type: application/json\r\n"
        '{"cookie": "sid=1", "x-api-key": \'k-1\', "proxy-authorization": "Basic dXNlcjpzM2NyM3Q="} '
        "<X-Auth-Token>t-2</X-Auth-Token> X-Inventory-Key=inv-3; Set-Cookie: a=b; Path=/"
    )
    cleaned = redact(text)
    for leaked in (secret, "s3cr3t%2F", "czNjcjN0", "someone-elses-token", "sid=1", "k-1", "t-2", "inv-3", "a=b"):
        assert leaked not in cleaned, (leaked, cleaned)
    assert "Content-Type: application/json" in cleaned and "Path=/" in cleaned
    assert cleaned.count(REDACTED) >= 9


# --- HTTP: the sample CRM answering with a body that echoes the request's headers ----------------------------------


def echo(crm_url: str, status: int) -> None:
    crm_control(crm_url, "/_control/mode", {"mode": "echo", "status": status})


@pytest.mark.django_db
@pytest.mark.parametrize("status", [500, 400, 404, 429])
def test_a_crm_echoing_its_credential_reaches_agents_proposals_and_mail_as_status_and_reference_only(
    crm_demo, stack_processes, agent_client, status, caplog, mailoutbox, settings, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.WARNING)
    settings.GATEHOUSE_EXECUTION_MAX_ATTEMPTS = 1  # a transient failure fails the proposal at once
    secret, said = stack_processes.crm_token, "debug_echo"
    crm, agent = System.objects.get(slug="crm"), Agent.objects.get(slug="collections-agent")
    note = factories.propose(agent, "add_note", {"text": "Called about the invoice."})  # auto-approved
    since = last_event_id()
    echo(stack_processes.crm_url, status)
    named = {"system": "crm", "status": str(status), "secret": secret, "said": said, "caplog": caplog}

    read = agent_client().get("/api/v1/systems/crm/accounts/4471")
    limits.reset(crm)  # each door meets the system itself, not a breaker the others opened
    tool = call_tool(agent, "crm_read_account", {"record_id": "4471"})
    limits.reset(crm)
    with django_capture_on_commit_callbacks(execute=True):
        outcome = proposal_execute(proposal_id=note.pk)

    if status == 404:  # the agent is told the record is not there, in Gatehouse's words alone
        assert read.status_code == 404 and tool.is_error
        for where, text in (("problem", read.content.decode()), ("tool result", f"{tool.message} {tool.structured}")):
            assert secret not in text and said not in text and "reference" not in text, (where, text)
    else:
        assert read.status_code == 503, read.content
        assert_named("problem detail", read.json()["detail"], **named)
        assert tool.is_error and tool.structured["code"] == "system_unavailable"
        assert_named("MCP tool result", f"{tool.message} {json.dumps(tool.structured)}", **named)
    failed = Proposal.objects.get(pk=note.pk)
    assert outcome.status == "failed" and failed.status == "failed"
    line = assert_named("failure reason", failed.failure_reason, **named)
    assert "POST /accounts/4471/notes" in failed.failure_reason
    assert '"authorization": "[redacted]"' in line  # the CRM echoed the header it received: logged, cut
    event = AuditEvent.objects.get(proposal_id=note.pk, verb="failed")
    assert_named("audit summary", event.summary, **named)
    assert [message.subject for message in mailoutbox] == [f"[Gatehouse] add_note on {crm} 4471 failed"], mailoutbox
    assert_named("failure e-mail", mailoutbox[0].body, **named)
    events = audit_text(since)
    assert secret not in events and said not in events


@pytest.mark.django_db
def test_a_reversal_step_refused_by_an_echoing_crm_keeps_the_status_and_reference_only(
    crm_demo, stack_processes, caplog, monkeypatch
):
    caplog.set_level(logging.WARNING)
    agent = Agent.objects.get(slug="collections-agent")
    note = factories.execute(factories.propose(agent, "add_note", {"text": "To be taken back."}))
    since = last_event_id()
    echo(stack_processes.crm_url, 400)

    reversal = reversal_run_here(reversal_id=reversal_plan(agent=agent, hours=24, channel="command").pk)

    step = ReversalStep.objects.get(reversal=reversal, proposal=note)
    assert step.status == ReversalStep.Status.FAILED
    secret = stack_processes.crm_token
    assert_named(
        "reversal step", step.last_error, system="crm", status="400", secret=secret, said="debug_echo", caplog=caplog
    )
    events = audit_text(since)
    assert "400" in events and secret not in events and "debug_echo" not in events


@pytest.mark.django_db
def test_a_rotation_checked_against_an_echoing_crm_reports_neither_secret_nor_what_the_crm_said(
    crm_demo, stack_processes, caplog, mailoutbox, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.WARNING)
    crm = System.objects.get(slug="crm")
    crm.connector_config = {**crm.connector_config, "health_path": "/accounts/4471"}  # a path the echo mode answers
    crm.save()
    current, new = stack_processes.crm_token, "rotated-" + secrets.token_hex(8)
    since = last_event_id()
    echo(stack_processes.crm_url, 400)

    with django_capture_on_commit_callbacks(execute=True):
        rotation = credential_rotate(system=crm, new_secret=new, actor=None, channel="command")

    assert rotation.stored and not rotation.health.ok and not rotation.previous_health.ok
    for where, health in (("new secret", rotation.health), ("current secret", rotation.previous_health)):
        assert new not in health.reason, (where, health.reason)
        assert_named(where, health.reason, system="crm", status="400", secret=current, said="debug_echo", caplog=caplog)
    told = "\n".join(f"{message.subject}\n{message.body}" for message in mailoutbox)
    events = audit_text(since)
    for text in (told, events):
        assert "400" in text and current not in text and new not in text and "debug_echo" not in text


# --- A governed system of another kind: an agent that reads it and an auto-approved action on it -----------------


def governed(system: System, *, fields: list[str], action: str, operation: dict[str, Any]) -> Agent:
    """An agent that may read `system`'s "records" and propose `action`, whose payload is one whole number
    "quantity" (no impact: approved automatically)."""
    resource = factories.ResourceFactory(system=system, name="records", label="record", fields=fields)
    factories.ActionTypeFactory(
        resource=resource,
        name=action,
        payload_schema={
            "type": "object",
            "properties": {"quantity": {"type": "integer"}},
            "required": ["quantity"],
            "additionalProperties": False,
        },
        impact_kind=ImpactKind.NONE,
        impact_field="",
        operation=operation,
        compensation=Compensation.NONE,
        not_reversible_note="A test action.",
    )
    # Not reversible, so automatic only because the rule says so explicitly (issue 17).
    rule = factories.ThresholdRuleFactory(
        system=system, name=f"Everything on {system.slug}", auto_executes_irreversible=True
    )
    factories.ThresholdBandFactory(rule=rule)
    threshold_rule_sign_off(rule=rule, user=system.owner, channel="command")
    agent = factories.AgentFactory(slug=f"{system.slug}-agent", owner=system.owner)
    factories.ScopeGrantFactory(agent=agent, resource=resource, access=Access.READ, fields=fields)
    factories.ScopeGrantFactory(agent=agent, resource=resource, access=Access.WRITE, actions=[action])
    return agent


def through_every_door(agent: Agent, system: System, action: str, agent_client, capture) -> dict[str, str]:
    """The agent reads record R-1 (REST and MCP) and proposes `action` on it, executed here with one attempt allowed
    (GATEHOUSE_EXECUTION_MAX_ATTEMPTS); what each door said."""
    read = agent_client(agent.slug).get(f"/api/v1/systems/{system.slug}/records/R-1")
    assert read.status_code == 503, read.content
    limits.reset(system)
    tool = call_tool(agent, f"{re.sub('[^a-z0-9]+', '_', system.slug)}_read_record", {"record_id": "R-1"})
    assert tool.is_error
    limits.reset(system)
    proposal = factories.propose(agent, action, {"quantity": 1}, "R-1", system=system.slug)
    with capture(execute=True):
        proposal_execute(proposal_id=proposal.pk)
    failed = Proposal.objects.get(pk=proposal.pk)
    assert failed.status == "failed"
    return {
        "problem detail": read.json()["detail"],
        "MCP tool result": f"{tool.message} {json.dumps(tool.structured)}",
        "failure reason": failed.failure_reason,
        "audit summary": AuditEvent.objects.get(proposal_id=proposal.pk, verb="failed").summary,
    }


# --- MCP: a careless server that echoes its token and its arguments ------------------------------------------------


def echo_server(f, settings, *, secret: str, crash: bool = False, slug: str = "careless") -> System:
    settings.GATEHOUSE_MCP_COMMANDS = [*settings.GATEHOUSE_MCP_COMMANDS, f"{sys.executable} -m sandbox.mcp_echo"]
    config = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "sandbox.mcp_echo"],
        "cwd": str(ROOT),
        "secret_env": "ECHO_TOKEN",
        "env": {"ECHO_CRASH": "1"} if crash else {},
        "timeout": 20,
        "reads": {"records": {"tool": "lookup", "arguments": {"key": "{record_id}"}}},
    }
    system = f.SystemFactory(
        slug=slug, connector_kind=ConnectorKind.MCP, integration_pattern=IntegrationPattern.MCP, connector_config=config
    )
    system.full_clean()
    credential_set(system=system, secret=secret, actor=system.owner, channel="command")
    return system


@pytest.mark.django_db
def test_an_mcp_tool_error_quoting_the_token_reaches_agents_and_proposals_as_tool_and_reference_only(
    crm_demo, f, settings, agent_client, caplog, mailoutbox, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.WARNING)
    settings.GATEHOUSE_EXECUTION_MAX_ATTEMPTS = 1
    secret = "mcp-token-" + secrets.token_hex(8)
    system = echo_server(f, settings, secret=secret)
    agent = governed(
        system, fields=["key"], action="explode", operation={"tool": "explode", "arguments": {"key": "{record_id}"}}
    )
    since = last_event_id()

    said = through_every_door(agent, system, "explode", agent_client, django_capture_on_commit_callbacks)

    # Every door meets the read tool's error result, the write too: it reads the record first (its state before).
    for where, text in said.items():
        assert_named(
            where,
            text,
            system="careless",
            status="tool lookup refused",
            secret=secret,
            said="may not read",
            caplog=caplog,
        )
    assert mailoutbox and all(secret not in m.body and "may not read" not in m.body for m in mailoutbox)
    assert "tool lookup refused" in mailoutbox[0].body
    events = audit_text(since)
    assert secret not in events and "may not read" not in events


@pytest.mark.django_db
def test_an_mcp_server_that_fails_or_dies_saying_its_token_is_a_transient_error_named_without_it(f, settings, caplog):
    caplog.set_level(logging.WARNING)
    secret = "mcp-token-" + secrets.token_hex(8)
    failing = echo_server(f, settings, secret=secret, slug="failing")
    crashing = echo_server(f, settings, secret=secret, crash=True, slug="crashing")

    with pytest.raises(TransientError) as protocol_error:  # a JSON-RPC error answer, code -32001
        McpConnector(failing, secret)._call("explode", {"key": "R-1"})
    with pytest.raises(TransientError) as died:
        connector_for(crashing).read("records", "R-1")
    health = connector_for(crashing).health()

    assert_named(
        "error",
        str(protocol_error.value),
        system="failing",
        status="tool explode failed: the MCP server answered error -32001",
        secret=secret,
        said="backend refused",
        caplog=caplog,
    )
    for where, text in (("error", str(died.value)), ("health", health.reason)):
        assert_named(
            where,
            text,
            system="crashing",
            status="the MCP server",
            secret=secret,
            said="could not log in",
            caplog=caplog,
        )
    assert not health.ok


@pytest.mark.slow
@pytest.mark.django_db
def test_a_pypi_mcp_servers_tool_error_echoing_its_argument_is_logged_not_passed_on(f, caplog):
    if not TIME_SERVER.exists():
        pytest.skip("mcp-server-time is not installed (pip, dev extra)")
    caplog.set_level(logging.WARNING)
    config = {
        "transport": "stdio",
        "command": str(TIME_SERVER),
        "args": ["--local-timezone", "UTC"],
        "timeout": 15,
        "reads": {"clocks": {"tool": "get_current_time", "arguments": {"timezone": "{record_id}"}}},
    }
    system = f.SystemFactory(slug="world-clock", connector_kind=ConnectorKind.MCP, connector_config=config)
    ungranted = "Nowhere/" + secrets.token_hex(6)

    with pytest.raises(PermanentError) as refused:
        connector_for(system).read("clocks", ungranted)
    with pytest.raises(TransientError) as unknown:
        McpConnector(system, None)._call("no_such_tool", {})

    message = str(refused.value)
    assert "world-clock: tool get_current_time refused" in message and ungranted not in message
    line = logged(caplog, refused.value.reference)
    assert "No time zone found" in line and ungranted in line  # the operator sees what the server said
    assert "answered error -32602" in str(unknown.value) and "Unknown tool" not in str(unknown.value)


# --- SOAP: the inventory faulting with the credential in its faultstring --------------------------------------------


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory):
    stack = Stack(tmp_path_factory.mktemp("soap-echo"))
    try:
        yield start_inventory(stack)
    finally:
        stack.stop_all()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fault_status", "error", "code"), [(500, TransientError, "soap:Server"), (400, PermanentError, "soap:Client")]
)
def test_a_soap_fault_echoing_the_credential_is_named_by_its_code_and_reference(
    inventory, fault_status, error, code, caplog
):
    caplog.set_level(logging.WARNING)
    crm_control(inventory, "/_control/reset")
    system = soap_system(inventory, credential={"kind": "header", "header_name": "X-Api-Key"})
    connector_for(system).read("items", "WID-100")  # the WSDL is loaded while the inventory behaves
    crm_control(inventory, "/_control/mode", {"mode": "echo", "status": fault_status})

    with pytest.raises(error) as failed:
        connector_for(system).read("items", "WID-100")

    assert not isinstance(failed.value, RecordNotFound)
    line = assert_named(
        "error", str(failed.value), system=system.slug, status=code, secret=INVENTORY_TOKEN, said="Debug", caplog=caplog
    )
    assert "x-api-key: [redacted]" in line


@pytest.mark.django_db
def test_an_agent_reading_a_soap_system_that_faults_with_the_credential_is_told_status_and_reference(
    crm_demo, inventory, agent_client, caplog, mailoutbox, settings, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.WARNING)
    settings.GATEHOUSE_EXECUTION_MAX_ATTEMPTS = 1
    crm_control(inventory, "/_control/reset")
    system = soap_system(inventory)
    system.connector_config["resources"]["records"] = system.connector_config["resources"]["items"]
    system.save()
    operation = {"operation": "SetQuantity", "id_param": "sku", "params": {"quantity": "quantity"}}
    agent = governed(system, fields=["quantity"], action="touch", operation=operation)
    connector_for(system).read("records", "WID-100")  # the WSDL is loaded while the inventory behaves
    crm_control(inventory, "/_control/mode", {"mode": "echo", "status": 400})
    since = last_event_id()

    said = through_every_door(agent, system, "touch", agent_client, django_capture_on_commit_callbacks)

    for where, text in said.items():
        assert_named(
            where, text, system=system.slug, status="soap:Client", secret=INVENTORY_TOKEN, said="Debug", caplog=caplog
        )
    assert mailoutbox and all(INVENTORY_TOKEN not in m.body and "Debug" not in m.body for m in mailoutbox)
    events = audit_text(since)
    assert INVENTORY_TOKEN not in events and "Debug" not in events
