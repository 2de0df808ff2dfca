"""JSON Schema checks that answer in field paths: one flattener for every door (REST payloads, MCP arguments)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import jsonschema


@dataclass(frozen=True)
class Wording:
    """How errors name what they are about: the payload's fields of an action, or a tool's arguments."""

    noun: str = "field"  # "field" | "argument"
    owner: str = "action"  # "action" | "tool"


FIELDS = Wording("field", "action")
ARGUMENTS = Wording("argument", "tool")


def closed_schema(schema: Any) -> dict[str, Any]:
    """A tool's input schema as an action's payload schema: an object that refuses unknown fields. Validated with
    Gatehouse's own draft (its `$schema` dropped). A copy: the original is left as it was."""
    schema = copy.deepcopy(schema) if isinstance(schema, dict) else {}
    schema.pop("$schema", None)
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    schema["additionalProperties"] = False
    return schema


def schema_errors(
    schema: dict[str, Any], instance: Any, *, prefix: str = "", wording: Wording = FIELDS
) -> dict[str, str]:
    """Path → message for every way `instance` misses `schema` (Draft 2020-12, formats checked); {} when it fits.

    Paths are dotted and start with `prefix` ("payload" gives "payload.credit_limit"). An unknown field is named by its
    own path, a missing required one too, so a person reads which field is wrong rather than a validator's message.
    """
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors: dict[str, str] = {}
    for error in sorted(validator.iter_errors(instance), key=lambda e: [str(part) for part in e.absolute_path]):
        where = [prefix] if prefix else []
        where += [str(part) for part in error.absolute_path]
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            for name in sorted(set(error.instance) - set(known)):
                errors.setdefault(
                    ".".join([*where, name]), f"Unknown {wording.noun}: this {wording.owner} does not take it."
                )
            continue
        if error.validator == "required" and "'" in error.message:
            missing = error.message.split("'")[1]
            errors.setdefault(".".join([*where, missing]), f"This {wording.noun} is required.")
            continue
        errors.setdefault(".".join(where) or f"{wording.noun}s", error.message[:300])
    return errors


def null_character_paths(value: Any, prefix: str) -> list[str]:
    """Paths of strings (and keys) holding NUL, which PostgreSQL's jsonb cannot store."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(value, prefix)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            found.append(path)
        elif isinstance(item, dict):
            for key, element in item.items():
                if "\x00" in str(key):
                    found.append(f"{path}.{key}")
                stack.append((element, f"{path}.{key}"))
        elif isinstance(item, list):
            stack.extend((element, f"{path}.{index}") for index, element in enumerate(item))
    return found
