"""Broken object-level authorization, across agents, on every object endpoint of the API and every MCP tool.

The collections agent owns proposals; the reporting agent (read grant on accounts, without e-mail) and an agent with no
grant at all try to reach them and everything else they hold no grant on. Another agent's object must look exactly
like a missing one (404 with the same body), records and events follow the grants, and nothing changes.

The sweep is checked against the URLconf and the tool list, so a new object endpoint or tool fails here until it has
its case."""

from __future__ import annotations

import itertools
import uuid

import pytest
from django.urls import URLPattern

from agents.mcp import resources
from agents.mcp.calls import call_tool
from agents.mcp.tools import GET_PROPOSAL, LIST_EVENTS, WAIT_FOR_DECISION, list_tools
from agents.rest.urls import urlpatterns
from approvals.models import Proposal
from audit.models import AuditEvent
from core.errors import ScopeDenied
from governance.models import Agent

PROPOSALS = "/api/v1/proposals"

# Every API route that names an object, and the cases below that cover it.
OBJECT_ROUTES = {
    "systems/<slug:system>/<slug:resource>/<any_record_id:record_id>": "records",
    "proposals/<uuid:proposal_id>": "proposal",
    "proposals/<uuid:proposal_id>/cancel": "proposal",
}
# Routes that list objects: each must show an agent only what it may see.
LIST_ROUTES = {"proposals": "proposal list", "events": "events", "systems": "systems", "me": "me"}
SCHEMA_ROUTES = {"schema/", "docs/"}


@pytest.fixture
def world(crm_demo, agent_client, f):
    """The collections agent's proposals (one pending, one with an idempotency key), and three clients."""
    collections = agent_client("collections-agent")
    pending = collections.post(
        PROPOSALS,
        {"system": "crm", "action": "update_credit_limit", "record_id": "4471", "payload": {"credit_limit": "5000.00"}},
        content_type="application/json",
    )
    keyed = collections.post(
        PROPOSALS,
        {"system": "crm", "action": "add_note", "record_id": "4472", "payload": {"text": "Called."}},
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="collections-key-1",
    )
    assert pending.status_code == 201 and keyed.status_code == 201, (pending.content, keyed.content)
    f.AgentFactory(slug="no-grants-agent")
    return {
        "collections": collections,
        "reporting": agent_client("reporting-agent"),
        "nobody": agent_client("no-grants-agent"),
        "ids": [pending.json()["id"], keyed.json()["id"]],
        "mark": AuditEvent.objects.order_by("-id").values_list("id", flat=True).first(),
    }


def body(response) -> dict:
    return response.json()


def test_every_object_route_of_the_api_has_a_case_here():
    routes = {str(pattern.pattern) for pattern in urlpatterns if isinstance(pattern, URLPattern)}
    assert routes == set(OBJECT_ROUTES) | set(LIST_ROUTES) | SCHEMA_ROUTES, "a new route needs its BOLA case here"


@pytest.mark.parametrize("intruder", ["reporting", "nobody"])
def test_another_agents_proposal_looks_exactly_like_a_missing_one_and_stays_as_it_was(world, intruder):
    client = world[intruder]
    for proposal_id in world["ids"]:
        missing = uuid.uuid4()
        for path in ("{}", "{}/cancel"):
            method = client.get if path == "{}" else client.post
            theirs = method(f"{PROPOSALS}/{path.format(proposal_id)}")
            absent = method(f"{PROPOSALS}/{path.format(missing)}")
            assert theirs.status_code == absent.status_code == 404, theirs.content
            assert body(theirs) == body(absent)
            assert theirs["Content-Type"] == absent["Content-Type"] == "application/problem+json"

    assert client.get(PROPOSALS).json()["results"] == []
    for status in ("pending_approval", "approved", "executed"):
        assert client.get(PROPOSALS, {"status": status}).json()["results"] == []
    statuses = dict(Proposal.objects.values_list("pk", "status"))
    assert sorted(str(pk) for pk in statuses) == sorted(world["ids"])
    assert not AuditEvent.objects.filter(id__gt=world["mark"], verb="cancelled").exists()


def test_an_idempotency_key_of_another_agent_replays_nothing_of_theirs(world):
    """The same key from the reporting agent is its own request (refused: no write grant), not their answer."""
    response = world["reporting"].post(
        PROPOSALS,
        {"system": "crm", "action": "add_note", "record_id": "4472", "payload": {"text": "Called."}},
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="collections-key-1",
    )
    assert response.status_code == 403 and body(response)["code"] == "scope_denied"
    assert "Idempotent-Replayed" not in response
    assert Proposal.objects.count() == 2


def test_records_follow_the_grants_not_the_record_id(world):
    reporting, nobody = world["reporting"], world["nobody"]
    granted = reporting.get("/api/v1/systems/crm/accounts/4471")
    assert granted.status_code == 200, granted.content
    assert "email" not in body(granted)["data"]  # the field its grant leaves out is not there at all
    assert "credit_limit" in body(granted)["data"]

    for client, path in [
        (nobody, "/api/v1/systems/crm/accounts/4471"),
        (reporting, "/api/v1/systems/crm-staging/accounts/4471"),  # the same resource on another system
        (reporting, "/api/v1/systems/legacy-inventory/events/1"),  # a resource of a system it has no grant on
    ]:
        response = client.get(path)
        assert response.status_code == 403, (path, response.content)
        assert body(response)["code"] == "scope_denied"

    refusals = AuditEvent.objects.filter(id__gt=world["mark"], verb="denied").values_list("actor", "outcome")
    assert sorted(refusals) == sorted(
        [("no-grants-agent", "scope_denied"), ("reporting-agent", "scope_denied"), ("reporting-agent", "scope_denied")]
    )


def test_events_and_systems_show_only_what_the_agent_holds_a_grant_on(world):
    reporting, nobody = world["reporting"], world["nobody"]
    for client in (reporting, nobody):
        response = client.get("/api/v1/events", {"system": "legacy-inventory"})
        assert response.status_code == 403 and body(response)["code"] == "scope_denied", response.content
    assert nobody.get("/api/v1/systems").json() == []
    assert [system["slug"] for system in reporting.get("/api/v1/systems").json()] == ["crm"]
    assert body(nobody.get("/api/v1/me"))["slug"] == "no-grants-agent"


def test_every_mcp_tool_that_names_an_object_refuses_another_agents(world):
    collections = Agent.objects.get(slug="collections-agent")
    reporting = Agent.objects.get(slug="reporting-agent")
    nobody = Agent.objects.get(slug="no-grants-agent")
    their_tools = {tool.name for tool in list_tools(collections)}
    # What each tool is checked with below; a new tool fails here until it has its case.
    assert their_tools == {
        "crm_read_account",
        "crm_propose_update_credit_limit",
        "crm_propose_add_note",
        "crm_propose_set_status",
        "crm_propose_send_statement",
        GET_PROPOSAL,
        LIST_EVENTS,
        WAIT_FOR_DECISION,
    }
    assert {tool.name for tool in list_tools(nobody)} <= {GET_PROPOSAL, LIST_EVENTS, WAIT_FOR_DECISION}

    for intruder in (reporting, nobody):
        for proposal_id, tool in itertools.product(world["ids"], (GET_PROPOSAL, WAIT_FOR_DECISION)):
            theirs = call_tool(intruder, tool, {"proposal_id": proposal_id})
            absent = call_tool(intruder, tool, {"proposal_id": str(uuid.uuid4())})
            assert theirs.is_error and absent.is_error and theirs.wait is None
            assert theirs.structured["code"] == absent.structured["code"] == "not_found"
            assert theirs.structured["message"] == absent.structured["message"]
        events = call_tool(intruder, LIST_EVENTS, {"system": "legacy-inventory"})
        assert events.is_error and events.structured["code"] == "scope_denied", events.structured

    read = call_tool(nobody, "crm_read_account", {"record_id": "4471"})
    assert read.is_error and read.structured["code"] == "scope_denied", read.structured
    with pytest.raises(ScopeDenied):  # the same record as an MCP resource
        resources.read(nobody, "gatehouse://crm/accounts/4471")
    for name in their_tools - {GET_PROPOSAL, LIST_EVENTS, WAIT_FOR_DECISION, "crm_read_account"}:
        result = call_tool(nobody, name, {"record_id": "4471", "reason": "x", "credit_limit": "1", "text": "x"})
        assert result.is_error and result.structured["code"] == "scope_denied", (name, result.structured)
    assert Proposal.objects.count() == 2
