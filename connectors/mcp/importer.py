"""Import a downstream MCP server's tools into the inventory, for the business owner to review.

Tools the server marks read-only (`readOnlyHint`) are listed as read candidates: the owner maps the ones that return
one record in the system's connector settings (`reads`). Every other tool becomes an ActionType whose payload schema
is the tool's input schema (closed with `additionalProperties: false`), not reversible until the owner says how
(`operation.compensate`) — so nothing an agent proposes on it runs without the system's threshold rule, and a
reversal lists it as not reversible rather than guessing. Importing again adds new tools and never undoes the owner's
choices (compensation, impact, descriptions they edited).

Each action pins its tool's definition as imported (digest, when, by whom: connectors/mcp/pinning.py). Importing
again pins actions imported before pinning existed (and takes their schema from the tool), but never accepts a pinned
tool's changed definition: that action is paused for a person to approve, as the periodic check does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.mcp.digest import definition_digest, tool_definition
from connectors.mcp.pinning import action_tool_changed
from connectors.registry import connector_for
from core.schema import closed_schema
from governance.choices import Compensation
from governance.models import ActionType, Resource, System

NOT_YET_REVERSIBLE = "Imported from the MCP server: the business owner has not said how to undo it yet."


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    read_candidates: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)  # pinned, and changed on the server: approve, not re-import


def import_tools(*, system: System, resource_name: str = "records", user=None, channel=Channel.COMMAND) -> ImportReport:
    connector: Any = connector_for(system)  # an McpConnector behind its limits
    tools = connector.list_tools()
    report = ImportReport()
    now = timezone.now()
    with transaction.atomic():
        resource, _ = Resource.objects.get_or_create(
            system=system, name=resource_name, defaults={"label": resource_name.rstrip("s") or "record"}
        )
        for tool in tools:
            name = tool.name
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,59}", name):
                report.skipped.append(f"{name} (not a usable action name)")
                continue
            annotations = tool.annotations
            if annotations is not None and annotations.read_only_hint:
                report.read_candidates.append(name)
                continue
            schema = closed_schema(tool.input_schema)
            definition = tool_definition(tool)
            digest = definition_digest(definition)
            existing = ActionType.objects.filter(system=system, name=name).first()
            if existing is None:
                action = ActionType(
                    system=system,
                    resource=resource,
                    name=name,
                    description=(tool.description or "")[:300],
                    payload_schema=schema,
                    operation={"tool": name},
                    compensation=Compensation.NONE,
                    not_reversible_note=NOT_YET_REVERSIBLE,
                )
                action.pin_tool(definition=definition, digest=digest, by=user, at=now)
                action.full_clean()
                action._change_reason = "origin=mcp-import"  # type: ignore[attr-defined]
                action.save()
                report.created.append(name)
            elif existing.tool_digest and existing.tool_digest != digest:
                # Accepted once as it was: a changed definition is approved by a person, never by importing again.
                if action_tool_changed(action_id=existing.pk, definition=definition, channel=channel):
                    report.paused.append(name)
            elif not existing.tool_digest or existing.payload_schema != schema:
                existing.payload_schema = schema
                if not existing.tool_digest:  # imported before tool pinning: pinned as it is now
                    existing.pin_tool(definition=definition, digest=digest, by=user, at=now)
                existing.full_clean()
                existing._change_reason = "origin=mcp-import"
                existing.save(update_fields=["payload_schema", *ActionType.PIN_FIELDS])
                report.updated.append(name)
        audit_record(
            verb=Verb.TOOLS_IMPORTED,
            actor=user,
            channel=channel,
            system=system,
            input={
                "created": report.created,
                "updated": report.updated,
                "read_candidates": report.read_candidates,
                "paused": report.paused,
            },
            summary=f"Imported the tools of {system}: {len(report.created)} new action(s), {len(report.updated)} "
            f"updated, {len(report.read_candidates)} read-only tool(s) to map as reads"
            + (f", {len(report.paused)} changed since approved (paused)." if report.paused else "."),
        )
    return report
