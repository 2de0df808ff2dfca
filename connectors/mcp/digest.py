"""What of an MCP tool is pinned, and its digest: the parts a model reads and a call depends on.

Pinned: `name`, `title`, `description` (what the model is told the tool does, and so what it will use it for),
`inputSchema` (what the call carries), `outputSchema` (what the answer is checked against) and `annotations`
(read-only, destructive, idempotent hints: a read tool turned destructive is exactly the change to notice). Not pinned:
`icons` (pictures for a person's screen) and `_meta` (free-form, some servers put versions or timestamps there), nor
the SDK's own execution hints: a change there changes nothing the model reads or the call sends.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any

PINNED_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")


def tool_definition(tool: Any) -> dict[str, Any]:
    """The pinned parts of a listed tool (an `mcp_types.Tool`), in the wire's names, absent parts left out."""
    dumped = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {name: dumped[name] for name in PINNED_FIELDS if name in dumped}


def definition_digest(definition: dict[str, Any]) -> str:
    """SHA-256 of the definition as canonical JSON (sorted keys, no spaces, UTF-8): equal definitions, equal digests,
    whatever order the server wrote the keys in."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


MAX_CHANGE_LINES = 60
_TEXT_FIELDS = ("name", "title", "description")


def definition_changes(before: dict[str, Any], after: dict[str, Any] | None) -> list[str]:
    """What changed from the pinned definition to the live one, for a person: each text part before and after, each
    schema or hint as a unified diff of its JSON. At most MAX_CHANGE_LINES lines (then "…")."""
    if after is None:
        return ["The server no longer lists this tool."]
    lines: list[str] = []
    for name in PINNED_FIELDS:
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if name in _TEXT_FIELDS:
            lines += [f"{name} was: {_quoted(old)}", f"{name} is now: {_quoted(new)}"]
            continue
        lines.append(f"{name} changed:")
        lines += [
            "  " + line
            for line in difflib.unified_diff(_json_lines(old), _json_lines(new), "pinned", "live", n=2, lineterm="")
        ]
    if len(lines) > MAX_CHANGE_LINES:
        lines = [*lines[: MAX_CHANGE_LINES - 1], "… (more changes: see the action's page)"]
    return [line[:300] for line in lines]


def _quoted(value: Any) -> str:
    return "(none)" if value is None else f"“{value}”"


def _json_lines(value: Any) -> list[str]:
    return [] if value is None else json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
