"""The records an agent may read, as MCP resources: `gatehouse://crm/accounts/4471`.

One resource template per granted read resource (`gatehouse://crm/accounts/{record_id}`, its granted fields in the
description), and a read of one URI through exactly the service the REST read and the read tool use (record_read:
kill switch, scope, only granted fields, the record-id rule, a `read` audit event on channel mcp).

resources/list answers an empty list, on purpose: the systems' records are not enumerable through Gatehouse (a
connector reads one record by id, and listing a system's records would be a read of its own that no grant covers).
The templates say what may be read; the agent names the record, as it does with the read tool.

Plain synchronous Django code, run by the server in a worker thread; refusals are GatehouseErrors the server turns
into JSON-RPC errors carrying the contract's code.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import mcp_types as types
from django.core.validators import slug_re

from agents import shapes
from agents.mcp.calls import refuse_arguments
from agents.mcp.tools import CHANNEL, READ, ToolTarget, readable, throttle
from connectors.reads import record_read
from core.errors import NotFound
from governance.choices import Access
from governance.gate import ensure_may_act
from governance.models import Agent, ScopeGrant

SCHEME = "gatehouse"
MIME_TYPE = "application/json"


def uri(system: str, resource: str, record_id: str) -> str:
    return f"{SCHEME}://{system}/{resource}/{record_id}"


def list_templates(agent: Agent) -> list[types.ResourceTemplate]:
    """One template per resource the agent may read by id, from its current grants (computed per request)."""
    throttle(agent)
    ensure_may_act(agent, channel=CHANNEL, write=False)
    templates = []
    for system, resource, fields in readable(ScopeGrant.objects.for_agent(agent).filter(access=Access.READ)):
        label = resource.label or resource.name
        templates.append(
            types.ResourceTemplate(
                uri_template=uri(system.slug, resource.name, "{record_id}"),
                name=f"{system.slug}/{resource.name}",
                title=f"One {label} of {system.name}",
                description=(
                    f"One {label} of {system.name}, its id in place of {{record_id}}: {shapes.RECORD_ID_RULE} Only "
                    f"the fields this agent may see: {', '.join(fields)}. Every read is audited (which fields, never "
                    "their values)."
                ),
                mime_type=MIME_TYPE,
            )
        )
    return templates


def may_list(agent: Agent) -> None:
    """resources/list has nothing to list (see the module's docstring), but answers a stopped agent as tools/list."""
    throttle(agent)
    ensure_may_act(agent, channel=CHANNEL, write=False)


def read(agent: Agent, address: str) -> types.ReadResourceResult:
    """One record by its URI, as the REST read answers it (system, resource, record_id and the granted fields)."""
    throttle(agent)
    parts = urlsplit(address)
    if parts.scheme != SCHEME or not parts.netloc or parts.query or parts.fragment:
        ensure_may_act(agent, channel=CHANNEL, write=False)  # the kill switch answers first, as on every call
        raise NotFound(f"No such resource: Gatehouse serves {uri('{system}', '{resource}', '{record_id}')}.")
    system, (resource, _, record_id) = parts.netloc, parts.path.removeprefix("/").partition("/")
    if not slug_re.match(system) or (resource and not slug_re.match(resource)):  # no NUL or such reaches a query
        ensure_may_act(agent, channel=CHANNEL, write=False)
        raise NotFound(f"No such resource: {address[:200]!r} names no system and resource of Gatehouse.")
    problem = shapes.record_id_problem(record_id) if resource else "The URI names no resource and record."
    if problem is not None:
        raise refuse_arguments(
            agent,
            ToolTarget(READ, system, resource),
            {"record_id": problem},
            message="The resource URI does not name one record.",
            record_id=record_id,
            detail={"uri": address[:300]},
        )
    record = record_read(agent=agent, system_slug=system, resource_name=resource, record_id=record_id, channel=CHANNEL)
    body: dict[str, Any] = {**record, "data": shapes.as_json(record["data"])}
    text = json.dumps(body, ensure_ascii=False)
    return types.ReadResourceResult(contents=[types.TextResourceContents(uri=address, mime_type=MIME_TYPE, text=text)])
