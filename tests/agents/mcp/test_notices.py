"""What the MCP endpoint says while a call runs, over real HTTP with the official MCP client: a log notice when a call
runs long (the sample CRM slowed down), at the call's own log level; progress while wait_for_decision waits for a
person, who decides in parallel through the approvals service; the wait's ends (decision, time, token, kill switch).
Quick answers stay one JSON body.
"""

from __future__ import annotations

import anyio
import httpx
import httpx2
import mcp_types as types
import pytest
from django.contrib.auth import get_user_model
from mcp.client import ClientSession
from mcp.client.streamable_http import streamable_http_client

from approvals.decisions import proposal_approve
from approvals.killswitch import SwitchTarget, kill_switch_on
from approvals.models import Proposal
from audit.models import AuditEvent
from governance.models import Agent
from governance.services import agent_tokens_revoke
from tests.agents.mcp.sessions import db, mcp_session, run, token_for

RAISE = {"record_id": "4471", "credit_limit": "5000.00", "reason": "paid on time"}  # +3,000: one approver, 4 h


def post(live, token: str, body: dict, accept: str = "application/json, text/event-stream") -> httpx.Response:
    return httpx.post(
        f"{live.stack.web_url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, **body},
        headers={"Authorization": f"Bearer {token}", "Accept": accept, "MCP-Protocol-Version": "2025-11-25"},
        timeout=30,
    )


@pytest.fixture
def slow_crm(live):
    live.crm_control("/_control/mode", {"mode": "slow", "delay": 1.5})  # past GATEHOUSE_MCP_SLOW_CALL (1 s)
    yield live
    live.crm_control("/_control/mode", {"mode": "normal"})


# --- Log notices of long calls ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_slow_read_tells_the_client_it_is_still_working_and_how_long_it_took(slow_crm):
    live, token = slow_crm, token_for()
    heard: list[types.LoggingMessageNotificationParams] = []

    async def logged(params: types.LoggingMessageNotificationParams) -> None:
        heard.append(params)

    async def scenario():
        async with mcp_session(live, token, logging_callback=logged) as session:
            read = await session.call_tool("crm_read_account", {"record_id": "4471"})
            resource = await session.read_resource("gatehouse://crm/accounts/4472")
            return read, resource

    read, resource = run(scenario)
    assert not read.is_error and read.structured_content["data"]["credit_limit"] == "2000.00"
    assert resource.contents[0].uri == "gatehouse://crm/accounts/4472"
    said = [(params.level, params.data["message"]) for params in heard]
    assert said[0] == ("notice", "crm_read_account is taking longer than 1 s; still working.")
    assert said[1][0] == "info" and said[1][1].startswith("crm_read_account took 1.")
    assert said[2] == ("notice", "gatehouse://crm/accounts/4472 is taking longer than 1 s; still working.")
    assert len(said) == 4 and all(params.logger == "gatehouse" and params.data["request_id"] for params in heard)


@pytest.mark.slow
# The SDK's client warns that the 2026-07-28 revision deprecates setLevel; it speaks 2025-11-25 here.
@pytest.mark.filterwarnings("ignore:The logging capability is deprecated")
def test_the_calls_own_log_level_filters_and_a_quick_call_is_one_json_body(slow_crm):
    live, token = slow_crm, token_for()
    heard: list[types.LoggingMessageNotificationParams] = []

    async def logged(params: types.LoggingMessageNotificationParams) -> None:
        heard.append(params)

    async def scenario():
        async with mcp_session(live, token, logging_callback=logged) as session:
            assert await session.set_logging_level("debug") == types.EmptyResult()  # accepted; kept nowhere
            meta = {types.LOG_LEVEL_META_KEY: "warning"}
            return await session.call_tool("crm_read_account", {"record_id": "4471"}, meta=meta)

    assert not run(scenario).is_error
    assert heard == []  # notice and info are below the call's "warning"

    call = {"method": "tools/call", "params": {"name": "crm_read_account", "arguments": {"record_id": "4471"}}}
    slow = post(live, token, call)
    assert slow.headers["content-type"].startswith("text/event-stream")
    assert slow.text.index('"notifications/message"') < slow.text.index('"result"')
    only_json = post(live, token, call, accept="application/json")  # as the endpoint answered before: JSON, quietly
    assert only_json.headers["content-type"] == "application/json" and only_json.json()["result"]["structuredContent"]

    live.crm_control("/_control/mode", {"mode": "normal"})
    quick = post(live, token, call)
    assert quick.headers["content-type"] == "application/json"
    assert quick.json()["result"]["structuredContent"]["data"]["name"]
    listing = post(live, token, {"method": "tools/list", "params": {}}, accept="application/json")
    assert listing.headers["content-type"] == "application/json" and listing.json()["result"]["tools"]


# --- wait_for_decision --------------------------------------------------------------------------------------------


def propose(live, token: str) -> str:
    async def scenario():
        async with mcp_session(live, token) as session:
            return await session.call_tool("crm_propose_update_credit_limit", RAISE)

    result = run(scenario)
    assert result.structured_content["outcome"] == "waiting_for_approval", result
    return result.structured_content["proposal"]["id"]


def wait_while(live, token: str, proposal_id: str, meanwhile, timeout: float = 30) -> tuple:
    """wait_for_decision with a progress callback; `meanwhile` runs (ORM work, in a thread) after the first progress."""
    progress: list[tuple[float, float | None, str | None]] = []
    heard = anyio.Event()

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))
        heard.set()

    async def scenario():
        async with mcp_session(live, token) as session, anyio.create_task_group() as group:

            async def act() -> None:
                await heard.wait()
                if meanwhile is not None:
                    await db(meanwhile)

            group.start_soon(act)
            result = await session.call_tool(
                "wait_for_decision",
                {"proposal_id": proposal_id, "timeout_seconds": timeout},
                progress_callback=on_progress,
            )
            heard.set()
            return result

    return run(scenario), progress


@pytest.mark.slow
def test_wait_for_decision_reports_progress_until_the_approver_decides_and_it_executes(live):
    token = token_for()
    proposal_id = propose(live, token)
    approver = get_user_model().objects.get(username="approver")

    def approve() -> None:
        proposal_approve(proposal_id=proposal_id, user=approver, channel="admin", comment="fine")

    result, progress = wait_while(live, token, proposal_id, approve)

    assert not result.is_error, result.content
    assert result.structured_content["outcome"] == "executed"  # the same shape as get_proposal
    assert result.structured_content["proposal"]["id"] == proposal_id
    _, total, message = progress[0]
    assert total == 30 and message.startswith("waiting for approver (due ") and message.endswith(" UTC)")
    assert [step[0] for step in progress] == sorted(step[0] for step in progress)
    assert live.crm_account("4471")["credit_limit"] == "5000.00"


@pytest.mark.slow
def test_wait_for_decision_answers_at_its_timeout_with_the_proposal_as_it_stands(live):
    token = token_for()
    proposal_id = propose(live, token)

    result, progress = wait_while(live, token, proposal_id, None, timeout=1.5)

    body = result.structured_content
    assert not result.is_error and body["outcome"] == "waiting_for_approval"
    assert body["message"].startswith("Still undecided after waiting 1.5 s. Waiting for approval by approver")
    assert body["waiting_for"]["approver"] == "approver"
    assert progress and Proposal.objects.get(pk=proposal_id).status == "pending_approval"


@pytest.mark.slow
def test_a_kill_switch_or_a_revoked_token_ends_the_wait_with_its_refusal(live):
    agent = Agent.objects.get(slug="collections-agent")
    token = token_for()
    proposal_id = propose(live, token)

    def revoke() -> None:
        agent_tokens_revoke(agent=agent, channel="command", reason="leaked")

    revoked, _ = wait_while(live, token, proposal_id, revoke)
    assert revoked.is_error and revoked.structured_content["code"] == "unauthenticated"

    token = token_for()

    def stop() -> None:
        kill_switch_on(target=SwitchTarget(agent=agent), reason="runaway loop", channel="command")

    stopped, _ = wait_while(live, token, proposal_id, stop)
    assert stopped.is_error and stopped.structured_content["code"] == "agent_disabled"
    assert AuditEvent.objects.filter(verb="denied", outcome="agent_disabled", channel="mcp").exists()
    assert Proposal.objects.get(pk=proposal_id).status == "on_hold"  # what the agent's switch does to its proposals


@pytest.mark.slow
def test_wait_for_decision_refuses_another_agents_proposal_and_a_wait_past_the_limit(live):
    proposal_id = propose(live, token_for())
    token = token_for("reporting-agent")

    async def scenario():
        async with mcp_session(live, token) as session:
            theirs = await session.call_tool("wait_for_decision", {"proposal_id": proposal_id})
            too_long = await session.call_tool(
                "wait_for_decision", {"proposal_id": proposal_id, "timeout_seconds": 301}
            )
            return theirs, too_long

    theirs, too_long = run(scenario)
    assert theirs.is_error and theirs.structured_content["code"] == "not_found"
    assert too_long.is_error and too_long.structured_content["code"] == "invalid_payload"
    assert set(too_long.structured_content["errors"]) == {"timeout_seconds"}


@pytest.mark.slow
def test_at_the_2026_revision_a_call_is_sent_log_messages_only_when_it_opts_in(slow_crm):
    """2026-07-28 (no initialize; each request carries its version) makes logging a per-request opt-in."""
    live, token = slow_crm, token_for()

    async def heard_at(log_level: types.LoggingLevel | None) -> tuple[str | None, list[str]]:
        heard: list[str] = []

        async def logged(params: types.LoggingMessageNotificationParams) -> None:
            heard.append(params.level)

        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30)) as http,
            streamable_http_client(f"{live.stack.web_url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write, logging_callback=logged, log_level=log_level) as session,
        ):
            await session.discover()
            result = await session.call_tool("crm_read_account", {"record_id": "4471"})
            assert not result.is_error, result
            return session.protocol_version, heard

    assert run(lambda: heard_at("info")) == ("2026-07-28", ["notice", "info"])
    assert run(lambda: heard_at(None)) == ("2026-07-28", [])
