"""Tool pinning: an MCP server may change what a tool says or takes after the business owner accepted it (a "rug
pull": a harmless description turned into instructions to the model, a schema that now takes more). Each imported
action keeps the digest of its tool's definition as accepted (connectors/mcp/digest.py); this module notices when the
server's live definition differs, and pauses the action until a person approves the new one
(governance/pinning.py).

Noticed three ways: the periodic check (beat, `connectors.check_mcp_tools`, every GATEHOUSE_MCP_TOOL_CHECK_INTERVAL),
the `check_mcp_tools` command, and every write itself: the connector lists the tools on its session just before
calling one and refuses to call a tool whose definition is not the pinned one (connectors.base.ToolChanged); the
worker then holds the proposal and pauses the action here. A paused action is refused at the gate (409
`action_paused`); approved proposals on it wait on hold (approvals/readiness.execution_pause) and go ahead once the
new definition is approved. A tool the server dropped pauses its action likewise. A new tool is only reported: it
becomes an action when someone imports it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.base import ConnectorError
from connectors.mcp.config import McpConfig
from connectors.mcp.digest import definition_changes, definition_digest, tool_definition
from connectors.notify import notify_tool_changed
from connectors.registry import connector_for
from governance.choices import ConnectorKind
from governance.models import ActionType, System

logger = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """What one check of a system's tools found."""

    system: str
    paused: list[str] = field(default_factory=list)  # actions paused by this check (their tool changed or went)
    still_paused: list[str] = field(default_factory=list)  # changed as already reported, awaiting approval
    unchanged: list[str] = field(default_factory=list)
    unpinned: list[str] = field(default_factory=list)  # no pin to compare with: import the tools to pin them
    new_tools: list[str] = field(default_factory=list)  # listed by the server, used by no action and no read
    error: str = ""  # the server could not be asked: nothing was compared

    def summary(self) -> str:
        if self.error:
            return f"{self.system}: not checked: {self.error}"
        parts = [f"{len(self.unchanged)} unchanged"]
        for label, names in (
            ("paused now", self.paused),
            ("still awaiting approval", self.still_paused),
            ("not pinned (import the tools to pin them)", self.unpinned),
            ("new on the server (not imported)", self.new_tools),
        ):
            if names:
                parts.append(f"{label}: {', '.join(names)}")
        return f"{self.system}: " + "; ".join(parts)


def mcp_systems() -> list[System]:
    return list(System.objects.filter(connector_kind=ConnectorKind.MCP).select_related("owner").order_by("slug"))


def tools_check(*, system: System, channel: Channel | str = Channel.TASK) -> CheckReport:
    """List `system`'s live tools through its connector (its rate limit and breaker apply) and compare each pinned
    action's tool with it: a changed or missing one pauses the action (action_tool_changed). A server that cannot be
    asked changes nothing: its writes fail at the call anyway, and the next check tries again."""
    report = CheckReport(system=system.slug)
    try:
        reads = McpConfig.parse(system.connector_config).reads
        listed = connector_for(system).list_tools()  # type: ignore[attr-defined]  # an McpConnector behind its guard
    except (ConnectorError, ValidationError) as exc:  # one system's fault never stops the others' checks
        report.error = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        logger.warning("mcp tool check of %s: %s", system.slug, report.error)
        return report
    live = {tool.name: tool_definition(tool) for tool in listed}
    used: set[str] = {mapping.tool for mapping in reads.values()}
    for action in ActionType.objects.filter(system=system).order_by("name"):
        used.add(action.tool_name)
        if not action.tool_digest:
            report.unpinned.append(action.name)
            continue
        definition = live.get(action.tool_name)
        if definition is not None and definition_digest(definition) == action.tool_digest:
            report.unchanged.append(action.name)  # a paused one stays paused: a person approves, not the server
        elif action_tool_changed(action_id=action.pk, definition=definition, channel=channel):
            report.paused.append(action.name)
        else:
            report.still_paused.append(action.name)
    report.new_tools = sorted(set(live) - used)
    return report


def tools_check_all(*, channel: Channel | str = Channel.TASK) -> list[CheckReport]:
    """Every `mcp` system's tools, one system after another (the beat task, the command without --system)."""
    return [tools_check(system=system, channel=channel) for system in mcp_systems()]


def action_tool_changed(*, action_id: int, definition: dict[str, Any] | None, channel: Channel | str) -> bool:
    """Pause the action: its tool's live definition (None: the server no longer lists it) is not the pinned one.
    The new definition is kept as pending for a person to approve, the change audited (`tool_changed`) and the
    system's owner told by mail. False when there is nothing new to say: already paused for this very definition,
    or it is the pinned one (approved meanwhile)."""
    digest = definition_digest(definition) if definition is not None else ""
    with transaction.atomic():
        # The check, a worker's call-time refusal and a person's approval may meet on this row: the lock orders them.
        action = ActionType.objects.select_for_update().get(pk=action_id)
        pending = action.tool_pending or {}
        if digest == action.tool_digest or (action.paused and pending.get("digest") == digest and pending):
            return False
        changes = definition_changes(action.tool_definition, definition)
        action.tool_pending = {
            "digest": digest,
            "definition": definition,
            "seen_at": timezone.now().isoformat(),
            "changes": changes,
        }
        gone = definition is None
        action.paused_reason = (
            f"its MCP tool {action.tool_name} {'is gone from' if gone else 'changed on'} the server; the system's "
            "owner must approve the new definition"
        )
        action._change_reason = "origin=mcp-tool-check"
        action.save(update_fields=["tool_pending", "paused_reason"])
        system = System.objects.select_related("owner").get(pk=action.system_id)
        audit_record(
            verb=Verb.TOOL_CHANGED,
            actor=None,
            channel=channel,
            system=system,
            resource=action.resource.name,
            state_before={"digest": action.tool_digest},
            state_after={"digest": digest},
            input={"action": action.name, "tool": action.tool_name, "changes": changes},
            outcome="paused",
            summary=f"The MCP tool {action.tool_name} of {system} {'is gone' if gone else 'changed'} since it was "
            f"approved: {action.name} is paused until its owner approves the new definition.",
        )
        action.system = system
        transaction.on_commit(functools.partial(notify_tool_changed, action, changes))
    return True
