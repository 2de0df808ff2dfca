"""The MCP endpoint's tool calls, each made through the services, exactly as in the REST API.

Nothing here decides whether an agent may do something: reads go through `record_read`, proposals through
`proposal_create`, events through `events_list`, proposal lookups through `Proposal.objects.visible_to`, and refusals
through the gate's `refuse`, so both doors run the same checks and leave the same audit events (channel `mcp`). What
this module adds is the MCP shape: arguments checked against the tool's input schema, and results that say plainly
what happened (agents.mcp.results).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError

from agents import shapes
from agents.mcp.results import ToolResult, Wait, proposal_result, refusal
from agents.mcp.tools import (
    CHANNEL,
    GET_PROPOSAL,
    GET_PROPOSAL_INPUT,
    IDEMPOTENCY_KEY,
    LIST_EVENTS_INPUT,
    PROPOSE,
    READ,
    READ_INPUT,
    WAIT_DEFAULT_SECONDS,
    WAIT_FOR_DECISION,
    ToolTarget,
    resolve,
    throttle,
    wait_input,
)
from agents.shapes import flatten_errors
from approvals.choices import DecisionMode
from approvals.services import ProposalRequest, proposal_create
from connectors.reads import events_list, record_read
from core.database import is_database_unavailable
from core.errors import GatehouseError, InvalidPayload, ScopeDenied, Unauthenticated
from core.problems import database_unavailable_error
from core.request_context import current_request_id
from core.schema import ARGUMENTS, schema_errors
from governance.gate import Target, ensure_may_act, refuse
from governance.models import Agent, System
from governance.services import agent_authenticate

logger = logging.getLogger(__name__)

# A propose tool's idempotency key, checked on its own: the rest of its arguments are the proposal serializer's.
_KEY_ONLY: dict[str, Any] = {"type": "object", "properties": {"idempotency_key": IDEMPOTENCY_KEY}}


# --- Calls --------------------------------------------------------------------------------------------------------


def call_tool(agent: Agent, name: str, arguments: dict[str, Any] | None) -> ToolResult:
    """Run one tool call through the services; a refusal comes back as an error result with the contract's code."""
    return answer(f"tool {name}", lambda: _call(agent, name, dict(arguments or {})))


def answer(what: str, work: Callable[[], ToolResult]) -> ToolResult:
    """`work`'s result, or its refusal as an error result with the contract's code.

    A lost database connection is the API's 503 `database_unavailable` too: every service is one transaction, so
    nothing was half-saved and the agent may call again (with the same idempotency_key for a proposal)."""
    try:
        return work()
    except GatehouseError as exc:
        return refusal(exc)
    except DatabaseError as exc:
        if not is_database_unavailable(exc):
            raise  # a broken query is a bug: the server reports it as the internal error it is
        logger.error(
            "database unavailable: MCP %s (request %s) refused: %s: %s",
            what,
            current_request_id(),
            type(exc).__name__,
            (str(exc).strip().splitlines() or [""])[0],
        )
        return refusal(database_unavailable_error())


def _call(agent: Agent, name: str, arguments: dict[str, Any]) -> ToolResult:
    throttle(agent)
    record_id = arguments.get("record_id")
    if isinstance(record_id, int) and not isinstance(record_id, bool):
        arguments["record_id"] = str(record_id)  # 4471 for "4471", as the REST API's serializer accepts it
    target = resolve(name)
    if target is None:
        ensure_may_act(agent, channel=CHANNEL, write=False)  # the kill switch answers first, as on every call
        raise refuse(
            ScopeDenied(f"{agent.slug} has no tool named {name!r}; list the tools to see the ones it holds."),
            agent=agent,
            channel=CHANNEL,
            target=Target(detail={"tool": name[:200], "arguments": arguments}),
        )
    if target.kind == READ:
        return _read(agent, name, target, arguments)
    if target.kind == PROPOSE:
        return _propose(agent, name, target, arguments)
    if target.kind == GET_PROPOSAL:
        return _get_proposal(agent, name, target, arguments)
    if target.kind == WAIT_FOR_DECISION:
        return _wait_for_decision(agent, name, target, arguments)
    return _list_events(agent, name, target, arguments)


# --- Each tool ----------------------------------------------------------------------------------------------------


def _refuse_arguments(
    agent: Agent, name: str, target: ToolTarget, arguments: dict[str, Any], errors: dict[str, str]
) -> GatehouseError:
    return refuse_arguments(
        agent,
        target,
        errors,
        message="The arguments do not fit the tool's input schema.",
        record_id=arguments.get("record_id"),
        detail={"tool": name, "arguments": arguments},
    )


def refuse_arguments(
    agent: Agent, target: ToolTarget, errors: dict[str, str], *, message: str, record_id: object, detail: dict[str, Any]
) -> GatehouseError:
    """An audited invalid_payload for arguments (or a resource URI) that name no record, before anything is read."""
    ensure_may_act(agent, channel=CHANNEL, write=False)  # a stopped agent hears that, not that its arguments are off
    system = System.objects.filter(slug=target.system).first() if target.system else None
    return refuse(
        InvalidPayload(message, errors=errors),
        agent=agent,
        channel=CHANNEL,
        target=Target(
            system=system,
            resource=target.resource,
            record_id=record_id[:200] if isinstance(record_id, str) else "",
            detail=detail,
        ),
    )


def _read(agent: Agent, name: str, target: ToolTarget, arguments: dict[str, Any]) -> ToolResult:
    errors = schema_errors(READ_INPUT, arguments, wording=ARGUMENTS)
    record_id = arguments.get("record_id")
    problem = shapes.record_id_problem(record_id) if isinstance(record_id, str) else None
    if problem is not None:  # the rule's own words, as at every door; and the schema's `$` allows a final newline
        errors["record_id"] = problem
    if errors:
        raise _refuse_arguments(agent, name, target, arguments, errors)
    record = record_read(
        agent=agent,
        system_slug=target.system,
        resource_name=target.resource,
        record_id=arguments["record_id"],
        channel=CHANNEL,
    )
    data = shapes.as_json(record["data"])
    shown = ", ".join(
        f"{key}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
        for key, value in data.items()
    )
    message = f"{record['system']}/{record['resource']} {record['record_id']}: {shown or 'no fields'}."
    return ToolResult({"outcome": "read", "message": message, **record, "data": data}, message)


def _propose(agent: Agent, name: str, target: ToolTarget, arguments: dict[str, Any]) -> ToolResult:
    body: dict[str, Any] = {"system": target.system, "action": target.action}
    rest = dict(arguments)
    for key in ("record_id", "reason"):
        if key in rest:
            body[key] = rest.pop(key)
    idempotency_key = rest.pop("idempotency_key", None)
    if idempotency_key is not None:
        key_errors = schema_errors(_KEY_ONLY, {"idempotency_key": idempotency_key}, wording=ARGUMENTS)
        if not key_errors and not shapes.IDEMPOTENCY_KEY.fullmatch(idempotency_key):  # e.g. a trailing newline
            key_errors = {"idempotency_key": "Must not contain control characters."}
        if key_errors:
            raise _refuse_arguments(agent, name, target, arguments, key_errors)
    if target.nested_payload:
        body["payload"] = rest.pop("payload", None)
        if rest:
            errors = {key: "Unknown argument: this tool does not take it." for key in sorted(rest)}
            raise _refuse_arguments(agent, name, target, arguments, errors)
    else:
        body["payload"] = rest
    # The REST API's own request serializer: the same rules for record_id and reason at both doors.
    serializer = shapes.ProposalCreateSerializer(data=body)
    if not serializer.is_valid():
        raise _refuse_arguments(agent, name, target, arguments, flatten_errors(serializer.errors))
    data = serializer.validated_data
    request = ProposalRequest.from_validated(data)
    answer = shapes.ProposalAnswer()  # as the REST API stores it
    try:
        proposal, replayed = proposal_create(
            agent=agent,
            request=request,
            channel=CHANNEL,
            idempotency_key=idempotency_key,
            respond=answer,
        )
    except InvalidPayload as exc:
        if exc.errors and not target.nested_payload:  # the payload's fields are this tool's own arguments
            exc.errors = {path.removeprefix("payload."): message for path, message in exc.errors.items()}
        raise
    result = proposal_result(agent, proposal.pk, answer.grants)  # the read grants read for the stored answer
    if replayed is not None:  # the first call's proposal, as it stands now: nothing was proposed again
        result.message = "Already proposed with this idempotency key. " + result.message
        result.structured["message"] = result.message
        return result
    if result.structured["outcome"] == "approved" and proposal.mode == DecisionMode.AUTO:
        result.settle = proposal.pk
    return result


def _get_proposal(agent: Agent, name: str, target: ToolTarget, arguments: dict[str, Any]) -> ToolResult:
    proposal_id = _proposal_id(agent, name, target, arguments, GET_PROPOSAL_INPUT)
    ensure_may_act(agent, channel=CHANNEL, write=False)
    return proposal_result(agent, proposal_id)


def _wait_for_decision(agent: Agent, name: str, target: ToolTarget, arguments: dict[str, Any]) -> ToolResult:
    """Where the proposal stands now; still undecided, the result carries the wait the server then polls out."""
    proposal_id = _proposal_id(agent, name, target, arguments, wait_input())
    ensure_may_act(agent, channel=CHANNEL, write=False)
    result = proposal_result(agent, proposal_id)
    if result.undecided:
        result.wait = Wait(proposal_id, float(arguments.get("timeout_seconds", WAIT_DEFAULT_SECONDS)))
    return result


def _proposal_id(
    agent: Agent, name: str, target: ToolTarget, arguments: dict[str, Any], schema: dict[str, Any]
) -> uuid.UUID:
    errors = schema_errors(schema, arguments, wording=ARGUMENTS)
    if not errors:
        try:
            return uuid.UUID(arguments["proposal_id"])
        except ValueError:
            errors = {"proposal_id": "Not a proposal id (a UUID)."}
    raise _refuse_arguments(agent, name, target, arguments, errors)


def proposal_recheck(token: str, source: str | None, proposal_id: uuid.UUID) -> ToolResult:
    """One poll of wait_for_decision, checked as a new call would be: the token again (revoked or expired ends the
    wait as unauthenticated), the kill switch (audited), then the agent's own proposal as it stands."""

    def check() -> ToolResult:
        found = agent_authenticate(token, source=source, channel=CHANNEL)
        if found is None:
            raise Unauthenticated("The token is no longer valid (revoked or expired): the wait ended.")
        agent = found[0]
        ensure_may_act(agent, channel=CHANNEL, write=False)
        return proposal_result(agent, proposal_id)

    return answer(f"tool {WAIT_FOR_DECISION}", check)


def _list_events(agent: Agent, name: str, target: ToolTarget, arguments: dict[str, Any]) -> ToolResult:
    errors = schema_errors(LIST_EVENTS_INPUT, arguments, wording=ARGUMENTS)
    if errors:
        raise _refuse_arguments(agent, name, target, arguments, errors)
    after = arguments.get("after", 0)
    events = events_list(
        agent=agent,
        system_slug=arguments.get("system"),
        after=after,
        limit=arguments.get("limit", 100),
        channel=CHANNEL,
    )
    next_after = events[-1]["id"] if events else after
    page = shapes.as_json(shapes.EventPageSerializer({"events": events, "next_after": next_after}).data)
    message = f"{len(events)} event(s)" + (f"; pass after={next_after} to read on." if events else "; none new.")
    return ToolResult({"outcome": "events", "message": message, **page}, message)
