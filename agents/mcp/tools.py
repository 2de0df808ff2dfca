"""The MCP endpoint's tool list: an agent's tools, computed from its grants, with stable names, input and output
schemas, and descriptions that say what approval a proposal may need.

Plain synchronous Django code; the server (agents.mcp.server) runs it in a worker thread. The calls themselves are
agents.mcp.calls; what a call answers is agents.mcp.results.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import mcp_types as types
from django.conf import settings

from agents import shapes
from agents.throttle import AgentRateThrottle
from approvals.choices import DecisionMode, ProposalStatus
from approvals.policy import find_rule
from audit.choices import Channel
from core.errors import Throttled
from governance import policy_cache
from governance.choices import Access, ImpactKind, IntegrationPattern, WriteMode
from governance.gate import ensure_may_act, granted_fields
from governance.models import ActionType, Agent, Resource, ScopeGrant, System, ThresholdBand

CHANNEL = Channel.MCP

READ, PROPOSE = "read", "propose"
GET_PROPOSAL, LIST_EVENTS, WAIT_FOR_DECISION = "get_proposal", "list_events", "wait_for_decision"
FIXED_TOOLS = (GET_PROPOSAL, LIST_EVENTS, WAIT_FOR_DECISION)

# The one record-id rule of every door (agents.shapes), for reads and proposals alike: it keeps path characters and
# dot segments out of the connectors' URLs. The calls check it with shapes.record_id_problem too.
RECORD_ID = {
    **shapes.RECORD_ID_SCHEMA,
    "description": "The record's id in the system, e.g. 4471. " + shapes.RECORD_ID_RULE,
}
REASON = {
    "type": "string",
    "maxLength": 2000,
    "description": "Why: shown to the approver and kept in the audit trail.",
}
# The REST API's Idempotency-Key header, as an argument: MCP clients retry calls too (a dropped connection, a timeout).
IDEMPOTENCY_KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": shapes.IDEMPOTENCY_KEY.pattern,
    "description": "Recommended: the same key again (for 24 h) answers with the first proposal instead of making a "
    "second one; the same key with other arguments is refused (idempotency_conflict).",
}
# Arguments of every propose tool; a payload field with one of these names keeps the payload as its own argument.
PROPOSE_ARGUMENTS = ("record_id", "reason", "idempotency_key")
READ_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {"record_id": RECORD_ID},
    "required": ["record_id"],
    "additionalProperties": False,
}
PROPOSAL_ID = {"type": "string", "format": "uuid", "description": "From a propose tool."}
GET_PROPOSAL_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {"proposal_id": PROPOSAL_ID},
    "required": ["proposal_id"],
    "additionalProperties": False,
}
# How long wait_for_decision waits when the call does not say.
WAIT_DEFAULT_SECONDS = 60
LIST_EVENTS_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "system": {"type": "string", "description": "Only this system (its slug)."},
        "after": {"type": "integer", "minimum": 0, "maximum": 2**62, "default": 0},
        "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
    },
    "additionalProperties": False,
}
# Keywords a payload schema may have and still be merged into the tool's own arguments.
_FLAT_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "title", "description"})


@dataclass(frozen=True)
class ToolTarget:
    """What a tool name stands for: a resource to read, an action to propose, or one of the two fixed tools."""

    kind: str
    system: str = ""
    resource: str = ""
    action: str = ""
    nested_payload: bool = False  # the payload schema could not be merged: it comes as the `payload` argument


# --- Names --------------------------------------------------------------------------------------------------------


def _name_part(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def read_tool_name(system: System, resource: Resource) -> str:
    """`crm_read_account`: the system's slug, then the resource's label (one record, singular)."""
    return f"{_name_part(system.slug)}_read_{_name_part(resource.label or resource.name)}"


def propose_tool_name(system: System, action: ActionType) -> str:
    """`crm_propose_update_credit_limit`."""
    return f"{_name_part(system.slug)}_propose_{_name_part(action.name)}"


def _readable_by_tool(system: System) -> bool:
    # Event-queue (batch) systems have no record to fetch by id: their data arrives as events, read by list_events.
    return system.integration_pattern != IntegrationPattern.EVENT_QUEUE


def _flattenable(schema: dict[str, Any]) -> bool:
    properties = schema.get("properties") or {}
    return (
        schema.get("type") == "object"
        and set(schema) <= _FLAT_KEYWORDS
        and isinstance(properties, dict)
        and not set(PROPOSE_ARGUMENTS) & set(properties)
    )


def _propose_target(action: ActionType) -> ToolTarget:
    return ToolTarget(
        PROPOSE,
        action.system.slug,
        action.resource.name,
        action.name,
        nested_payload=not _flattenable(action.payload_schema or {}),
    )


def resolve(name: str) -> ToolTarget | None:
    """The target a tool name stands for in the whole inventory, granted to the caller or not (the services decide).

    One query: the resources (or actions) with their systems, matched by name here, since names are normalised. Within
    a call's scope the answer is cached per process under the policy generation (names nobody has are not kept)."""
    if name in FIXED_TOOLS:
        return ToolTarget(name)
    found = functools.partial(_resolve, name)
    return policy_cache.cached(("mcp_tool", name), found, keep=lambda target: target is not None)


def _resolve(name: str) -> ToolTarget | None:
    if "_read_" in name:
        for resource in Resource.objects.select_related("system"):
            system = resource.system
            if _readable_by_tool(system) and read_tool_name(system, resource) == name:
                return ToolTarget(READ, system.slug, resource.name)
    if "_propose_" in name:
        for action in ActionType.objects.select_related("system", "resource"):
            if propose_tool_name(action.system, action) == name:
                return _propose_target(action)
    return None


# --- The tool list ------------------------------------------------------------------------------------------------


def list_tools(agent: Agent) -> list[types.Tool]:
    """The calling agent's tools, from its current grants: computed per request, so a grant change shows at once.

    Raises a GatehouseError (throttled, agent disabled, global stop) that the server reports as a protocol error.
    """
    throttle(agent)
    ensure_may_act(agent, channel=CHANNEL, write=False)
    reads: list[ScopeGrant] = []
    writable: dict[int, set[str]] = {}
    for grant in ScopeGrant.objects.for_agent(agent):
        if grant.access == Access.READ:
            reads.append(grant)
        else:
            writable.setdefault(grant.resource_id, set()).update(grant.actions)
    tools: dict[str, types.Tool] = {}
    for system, resource, fields in readable(reads):
        name = read_tool_name(system, resource)
        tools.setdefault(name, _read_tool(name, system, resource, fields))
    actions = (
        ActionType.objects.filter(resource_id__in=writable)
        .select_related("system", "resource")
        .order_by("system__slug", "name")
    )
    for action in actions:
        if action.name in writable[action.resource_id]:
            name = propose_tool_name(action.system, action)
            tools.setdefault(name, _propose_tool(name, action))
    tools[GET_PROPOSAL] = _get_proposal_tool()
    tools[LIST_EVENTS] = _list_events_tool()
    tools[WAIT_FOR_DECISION] = _wait_for_decision_tool()
    return list(tools.values())


def readable(read_grants: Iterable[ScopeGrant]) -> list[tuple[System, Resource, list[str]]]:
    """What an agent's current read grants let it read by record id: each resource once, with its granted fields.
    One read tool each, and one resource template each (agents.mcp.resources)."""
    reads: dict[int, list[ScopeGrant]] = {}
    for grant in read_grants:
        reads.setdefault(grant.resource_id, []).append(grant)
    found = []
    for grants in reads.values():
        system, resource = grants[0].system, grants[0].resource
        if _readable_by_tool(system):
            found.append((system, resource, granted_fields(resource, grants)))
    return found


def _read_tool(name: str, system: System, resource: Resource, fields: list[str]) -> types.Tool:
    label = resource.label or resource.name
    return types.Tool(
        name=name,
        title=f"Read one {label} from {system.name}",
        description=(
            f"Read one {label} of {system.name} ({system.slug}/{resource.name}) by its id. Returns only the fields "
            f"this agent may see: {', '.join(fields)}. Every read is audited (which fields, never their values)."
        ),
        input_schema=READ_INPUT,
        output_schema=_output_schema(
            ["read"],
            {
                "system": {"type": "string"},
                "resource": {"type": "string"},
                "record_id": {"type": "string"},
                "data": {
                    "type": "object",
                    "properties": {field: {} for field in fields},
                    "additionalProperties": False,
                    "description": "Only the granted fields.",
                },
            },
        ),
        annotations=types.ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
    )


def _propose_tool(name: str, action: ActionType) -> types.Tool:
    system, label = action.system, action.resource.label or action.resource.name
    payload_schema = action.payload_schema or {}
    if _flattenable(payload_schema):
        properties = {**(payload_schema.get("properties") or {}), "record_id": RECORD_ID, "reason": REASON}
        required = [*(payload_schema.get("required") or []), "record_id"]
    else:
        properties = {"record_id": RECORD_ID, "reason": REASON, "payload": payload_schema}
        required = ["record_id", "payload"]
    properties["idempotency_key"] = IDEMPOTENCY_KEY
    reversible = "Reversible." if action.reversible else f"Not reversible: {action.not_reversible_note or 'no undo.'}"
    return types.Tool(
        name=name,
        title=f"Propose {action.name} on one {label} in {system.name}",
        description=(
            f"Propose: {(action.description or action.name).rstrip('.')} ({system.name}, one {label} by record_id). "
            f"{approval_text(action)} {reversible} Gatehouse checks the arguments and the current record, decides, "
            "and answers whether the change executed, waits for approval (by whom, by when) or was refused."
        ),
        input_schema={
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
        output_schema=PROPOSAL_OUTPUT,
        annotations=types.ToolAnnotations(
            read_only_hint=False, destructive_hint=not action.reversible, idempotent_hint=False, open_world_hint=False
        ),
    )


def _get_proposal_tool() -> types.Tool:
    return types.Tool(
        name=GET_PROPOSAL,
        title="Get one of this agent's proposals",
        description="Where a proposal stands now: executed, waiting for approval (by whom, by when), rejected, ….",
        input_schema=GET_PROPOSAL_INPUT,
        output_schema=PROPOSAL_OUTPUT,
        annotations=types.ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
    )


def wait_input() -> dict[str, Any]:
    """wait_for_decision's arguments; the longest wait is a setting (GATEHOUSE_MCP_WAIT_MAX)."""
    longest = int(settings.GATEHOUSE_MCP_WAIT_MAX.total_seconds())
    return {
        "type": "object",
        "properties": {
            "proposal_id": PROPOSAL_ID,
            "timeout_seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": longest,
                "default": min(WAIT_DEFAULT_SECONDS, longest),
                "description": f"Stop waiting after this long (at most {longest} s) and answer where it stands.",
            },
        },
        "required": ["proposal_id"],
        "additionalProperties": False,
    }


def _wait_for_decision_tool() -> types.Tool:
    return types.Tool(
        name=WAIT_FOR_DECISION,
        title="Wait for a person to decide one of this agent's proposals",
        description=(
            "Wait until a proposal waiting for approval is decided and, if approved, executed; or until "
            "timeout_seconds pass. Answers as get_proposal does. While it waits, it sends progress notifications "
            "(when the call carries a progressToken) saying who decides and by when."
        ),
        input_schema=wait_input(),
        output_schema=PROPOSAL_OUTPUT,
        annotations=types.ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
    )


def _list_events_tool() -> types.Tool:
    return types.Tool(
        name=LIST_EVENTS,
        title="List events from event-queue (batch) systems",
        description=(
            "Events from the event-queue (legacy batch) systems this agent may read, oldest first after the cursor "
            "`after`; only granted fields of each event. Pass `next_after` back as `after` to read on."
        ),
        input_schema=LIST_EVENTS_INPUT,
        output_schema=_output_schema(
            ["events"],
            {
                "events": {"type": "array", "items": {"type": "object"}},
                "next_after": {"type": "integer", "description": "Pass as `after` to read on."},
            },
        ),
        annotations=types.ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
    )


OUTCOMES = [
    "executed",
    "approved",
    "waiting_for_approval",
    "manual_task",
    "rejected",
    "cancelled",
    "expired",
    "failed",
    "reversed",
    "on_hold",
]
# A refusal is a tool error whose structured content has the same envelope: `outcome` "refused" and the contract's
# code. One schema covers both, since clients (the TypeScript SDK among them) validate error results against it too.
REFUSAL_PROPERTIES: dict[str, Any] = {
    "code": {"type": "string", "description": "When refused: the code from the contract, e.g. scope_denied."},
    "status": {"type": "integer", "description": "When refused: the HTTP status the REST API would answer."},
    "errors": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Argument → problem."},
    "retry_after": {"type": "integer", "description": "When refused for now: seconds to wait."},
    "request_id": {"type": "string"},
}


def _output_schema(outcomes: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "outcome": {"type": "string", "enum": [*outcomes, "refused"]},
            "message": {"type": "string", "description": "What happened, in plain words."},
            **properties,
            **REFUSAL_PROPERTIES,
        },
        "required": ["outcome", "message"],
    }


PROPOSAL_OUTPUT: dict[str, Any] = _output_schema(
    OUTCOMES,
    {
        "proposal": {
            "type": "object",
            "description": "As the REST API's GET /api/v1/proposals/{id} returns it.",
            "properties": {
                "id": {"type": "string"},
                "status": {"type": "string", "enum": list(ProposalStatus.values)},
                "decision": {"type": "object"},
                "impact": {"type": "object"},
            },
            "required": ["id", "status", "decision"],
        },
        "waiting_for": {
            "type": "object",
            "description": "Only while it awaits a decision: who decides (a named approver or a group) and by when.",
            "properties": {
                "approver": {"type": "string"},
                "approver_group": {"type": "string"},
                "due_at": {"type": "string", "description": "The approval SLA (ISO 8601)."},
                "second_review_group": {"type": "string"},
                "expires_at": {"type": "string", "description": "Undecided by then, it expires (ISO 8601)."},
            },
        },
    },
)


# --- What approval a proposal may need, in words ------------------------------------------------------------------


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _band_range(band: ThresholdBand, currency: str) -> str:
    if band.max_amount is None:
        return f"{band.min_amount:,.2f} {currency} and above"
    if band.min_amount == 0:
        return f"under {band.max_amount:,.2f} {currency}"
    return f"{band.min_amount:,.2f} to under {band.max_amount:,.2f} {currency}"


def _band_mode(band: ThresholdBand) -> str:
    if band.mode == DecisionMode.AUTO:
        return "executes without approval"
    approver, group, reviewers = band.approver, band.approver_group, band.review_group
    if approver is not None:
        who = approver.get_username()
    elif group is not None:
        who = f"someone in the {group.name} group"
    else:
        who = "an approver"
    text = f"needs approval by {who}" + (f" within {_duration(band.sla)}" if band.sla else "")
    if band.mode == DecisionMode.DUAL and reviewers is not None:
        timing = "before" if band.review_timing == "before" else "after"
        within = f" within {_duration(band.review_within)}" if band.review_within else ""
        text += f", then a second review by the {reviewers.name} group{within} ({timing} execution)"
    return text


def approval_text(action: ActionType) -> str:
    """What approval a proposal of `action` may need, in words: its rule's bands, as approvals.policy reads them."""
    system = action.system
    state = ""
    if system.write_mode in (WriteMode.DISABLED, WriteMode.READ_ONLY) or system.writes_frozen:
        state = f" Writes to {system.name} are currently refused (write mode {system.write_mode}"
        state += ", frozen)." if system.writes_frozen else ")."
    elif system.write_mode == WriteMode.PROPOSE_ONLY:
        state = f" {system.name} is propose-only: every proposal needs a person, who then carries the change out."
    fallback = f"a person in the approvers' group decides within {_duration(settings.GATEHOUSE_FALLBACK_SLA)}"
    rule = find_rule(system, action)
    if rule is None:
        return f"Approval: no threshold rule covers it, so {fallback}.{state}"
    if not rule.is_signed_off:
        return f"Approval: rule “{rule.name}” is not signed off by the business owner, so {fallback}.{state}"
    bands = list(rule.bands.all())
    if action.impact_kind == ImpactKind.NONE:
        first = next((band for band in bands if band.min_amount == 0), None)
        mode = _band_mode(first) if first else fallback
        return f"Approval: no money is at stake, so by rule “{rule.name}” it {mode}.{state}"
    if action.impact_kind == ImpactKind.DELTA:
        basis = f"the change in {action.impact_field} (new value minus the current one in {system.name})"
    else:
        basis = f"the amount in {action.impact_field}"
    ranges = "; ".join(f"{_band_range(band, rule.currency)}: {_band_mode(band)}" for band in bands)
    return f"Approval by rule “{rule.name}”, on the size of {basis}: {ranges}.{state}"


# --- The rate -----------------------------------------------------------------------------------------------------


def throttle(agent: Agent) -> None:
    """The REST API's per-agent rate (GATEHOUSE_AGENT_RATE), one budget shared by both doors: listing and calling."""
    rate = AgentRateThrottle()
    if not rate.allow_request(SimpleNamespace(user=agent), None):
        wait = rate.wait()
        raise Throttled(f"Too many calls: try again in {wait} s.", headers={"Retry-After": str(wait)})
