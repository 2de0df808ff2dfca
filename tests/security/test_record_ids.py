"""One record-id rule at every door (CONTRACT.md, input rules; item 10): 1-200 characters of [A-Za-z0-9._:@-], never
"." or ".." alone. REST reads, REST proposals, the MCP read and propose tools refuse anything else with an audited
422 invalid_payload (a REST read's id too when it holds a "/" or is empty), and the sample CRM (a real
process, which counts every business request it is sent) never hears of it; ids that keep to the rule still reach
it."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from agents.mcp.calls import call_tool
from agents.mcp.tools import list_tools
from approvals.models import Proposal
from audit.models import AuditEvent
from governance.models import Agent, GlobalSwitch
from sandbox.testing import crm_control
from tests.factories import post_proposal as propose

# As an agent would send them in a JSON body or a tool's arguments: "%2E%2E" is text there, not an encoded "..".
REFUSED = [".", "..", "%2E%2E", "a/b", "", "x" * 201, "../4471", "4471/..", "4471\n"]
REFUSED_IDS = [
    "dot",
    "dot-dot",
    "encoded-dot-dot",
    "slash",
    "empty",
    "201-chars",
    "up-then-id",
    "id-then-up",
    "newline",
]
# As they arrive in the URL of a REST read: percent-encoded dots and slashes are decoded before routing. The route
# takes whatever follows the resource ("/" and nothing included) to the view, which answers by the rule.
REFUSED_PATHS = [".", "..", "%2E%2E", "%2e%2E", ".%2E", "x" * 201, "4471%0A", "4471%00"]
REFUSED_PATHS += ["a/b", "a%2Fb", "..%2F4471", "%2E%2E/4471", "4471/..", ""]
KEPT = ["4471", "a.b", "v1:2@x", "...", "x" * 200]


@pytest.fixture
def collections(crm_demo, agent_client):
    return agent_client("collections-agent")


@pytest.fixture
def agent(crm_demo) -> Agent:
    return Agent.objects.get(slug="collections-agent")


@pytest.fixture
def crm_requests(stack_processes):
    """How many business requests the session's sample CRM has been sent so far (crm_demo resets the count)."""
    return lambda: crm_control(stack_processes.crm_url, "/_stats")["requests_total"]


@pytest.fixture
def mark(crm_demo) -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def refused_and_audited(status: int, body: dict, mark: int, channel: str) -> None:
    assert status == 422, body
    assert body["code"] == "invalid_payload" and set(body["errors"]) == {"record_id"}, body
    assert "not . or .. alone" in body["errors"]["record_id"]
    events = AuditEvent.objects.filter(id__gt=mark)
    assert list(events.values_list("verb", "outcome", "channel")) == [("denied", "invalid_payload", channel)]
    assert not Proposal.objects.exists()


# --- REST reads ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("record_id", REFUSED_PATHS, ids=repr)
def test_a_rest_read_of_an_id_outside_the_rule_is_refused_before_the_crm(collections, mark, crm_requests, record_id):
    before = crm_requests()
    response = collections.get(f"/api/v1/systems/crm/accounts/{record_id}")
    assert response["Content-Type"] == "application/problem+json", response.content
    refused_and_audited(response.status_code, response.json(), mark, "api")
    denied = AuditEvent.objects.get(id__gt=mark)
    assert denied.system.slug == "crm" and denied.resource == "accounts"
    assert crm_requests() == before


@pytest.mark.parametrize("record_id", KEPT[1:], ids=repr)
def test_a_rest_read_of_an_id_inside_the_rule_reaches_the_crm(collections, mark, crm_requests, record_id):
    before = crm_requests()
    response = collections.get(f"/api/v1/systems/crm/accounts/{record_id}")
    assert response.status_code == 404 and response.json()["code"] == "not_found", response.content  # the CRM's
    assert list(AuditEvent.objects.filter(id__gt=mark).values_list("verb", "outcome")) == [("read", "not_found")]
    assert crm_requests() > before


def test_a_rest_read_of_4471_still_answers(collections):
    response = collections.get("/api/v1/systems/crm/accounts/4471")
    assert response.status_code == 200 and response.json()["record_id"] == "4471"


def test_under_the_global_stop_a_bad_id_hears_of_the_stop_first(collections, mark):
    GlobalSwitch.objects.create(pk=1, engaged=True, reason="drill")
    response = collections.get("/api/v1/systems/crm/accounts/..")
    assert response.status_code == 503 and response.json()["code"] == "system_frozen", response.content
    assert list(AuditEvent.objects.filter(id__gt=mark).values_list("outcome", flat=True)) == ["system_frozen"]


# --- REST proposals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("record_id", REFUSED, ids=REFUSED_IDS)
def test_a_proposal_naming_an_id_outside_the_rule_is_refused_before_the_crm(collections, mark, crm_requests, record_id):
    before = crm_requests()
    response = propose(collections, "add_note", {"text": "x"}, record=record_id)
    refused_and_audited(response.status_code, response.json(), mark, "api")
    assert crm_requests() == before


@pytest.mark.parametrize("record_id", KEPT, ids=repr)
def test_a_proposal_naming_an_id_inside_the_rule_reaches_the_crm(collections, crm_requests, record_id):
    before = crm_requests()
    response = propose(collections, "add_note", {"text": "x"}, record=record_id)
    if record_id == "4471":
        assert response.status_code == 201, response.content
    else:  # checked against the CRM (add_note needs the record to exist), which has no such account
        assert response.status_code == 422 and response.json()["detail"].startswith("No account"), response.content
    assert crm_requests() > before


# --- MCP tools ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", ["crm_read_account", "crm_propose_add_note"])
@pytest.mark.parametrize("record_id", REFUSED, ids=REFUSED_IDS)
def test_an_mcp_tool_refuses_an_id_outside_the_rule_before_the_crm(agent, mark, crm_requests, tool, record_id):
    before = crm_requests()
    arguments = {"record_id": record_id} if tool == "crm_read_account" else {"record_id": record_id, "text": "x"}
    result = call_tool(agent, tool, arguments)
    assert result.is_error, result.structured
    refused_and_audited(result.structured["status"], result.structured, mark, "mcp")
    assert crm_requests() == before


@pytest.mark.parametrize("record_id", KEPT, ids=repr)
def test_the_mcp_read_tool_takes_an_id_inside_the_rule_to_the_crm(agent, crm_requests, record_id):
    before = crm_requests()
    result = call_tool(agent, "crm_read_account", {"record_id": record_id})
    if record_id == "4471":
        assert result.structured["outcome"] == "read", result.structured
    else:
        assert result.structured["code"] == "not_found", result.structured
    assert crm_requests() > before


# --- What the documents say ---------------------------------------------------------------------------------------


def test_every_mcp_tool_that_takes_a_record_id_says_the_rule_in_its_input_schema(agent):
    tools = [tool for tool in list_tools(agent) if "record_id" in tool.input_schema["properties"]]
    assert {tool.name for tool in tools} >= {"crm_read_account", "crm_propose_update_credit_limit"}
    for tool in tools:
        schema = tool.input_schema["properties"]["record_id"]
        for record_id in [".", "..", "a/b", "", "x" * 201]:
            assert not jsonschema.Draft202012Validator(schema).is_valid(record_id), (tool.name, record_id)
        for record_id in KEPT:
            assert jsonschema.Draft202012Validator(schema).is_valid(record_id), (tool.name, record_id)


def test_the_openapi_document_says_the_rule_for_the_read_path_and_the_proposal_body(client):
    document = yaml.safe_load(client.get("/api/v1/schema/").content)
    read = document["paths"]["/api/v1/systems/{system}/{resource}/{record_id}"]["get"]
    in_path = next(p["schema"] for p in read["parameters"] if p["name"] == "record_id")
    in_body = document["components"]["schemas"]["ProposalCreate"]["properties"]["record_id"]
    assert "invalid_payload" in read["responses"]["422"]["description"]
    for schema in (in_path, in_body):
        for record_id in [".", "..", "a/b", "", "x" * 201]:
            assert not jsonschema.Draft4Validator(schema).is_valid(record_id), record_id
        for record_id in KEPT:
            assert jsonschema.Draft4Validator(schema).is_valid(record_id), record_id
