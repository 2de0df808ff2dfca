"""Reading a policy document back (governance/policy_document.py) into the canonical form the export writes.

The shape is checked against a JSON Schema built from the models' own fields, then what a schema cannot say: values
(durations, amounts, times), names used twice, people and groups that exist (apply_policy never creates people),
references within the document, the bands of each rule together (`validate_bands`, as every door checks them). Every
problem is listed with where it is; nothing is read from a half-valid document.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import yaml
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.db import models

from core.durations import parse_duration_words
from core.schema import Wording, schema_errors
from governance.models import ActionType, BandSpec, validate_bands
from governance.policy_document import (
    ACTION,
    AGENT,
    BAND,
    CHILDREN,
    SYSTEM,
    VERSION,
    Part,
    PolicyError,
    from_document,
    identity,
    list_order,
    model_default,
    model_field,
    ordered,
    to_document,
)

# --- Shape: a JSON Schema made from the models' fields --------------------------------------------------------


def _field_schema(field: models.Field) -> dict[str, Any]:
    nullable = field.null or field.is_relation
    if field.choices:
        options: list[Any] = [value for value, _ in field.flatchoices]
        schema: dict[str, Any] = {"enum": options + ([None] if nullable else [])}
        return schema
    if isinstance(field, models.JSONField):
        kind: list[str] = ["object", "array"]
    elif isinstance(field, models.BooleanField):
        kind = ["boolean"]
    elif isinstance(field, models.IntegerField):
        kind = ["integer"]
    elif isinstance(field, models.DecimalField):
        kind = ["string", "number"]
    elif isinstance(field, models.DateTimeField):
        kind = ["string"]  # a quoted timestamp; YAML's own timestamps are read as such before the schema (`_plain`)
    else:
        kind = ["string"]
    schema = {"type": [*kind, "null"] if nullable else kind}
    if isinstance(field, models.CharField) and field.max_length:
        schema["maxLength"] = field.max_length
    return schema


def _part_schema(part: Part) -> dict[str, Any]:
    properties: dict[str, Any] = {key: _field_schema(model_field(part, key)) for key in part.keys}
    if part is SYSTEM:
        properties["connector_config"] = {"type": "object"}
    if part is ACTION:
        properties |= {"payload_schema": {"type": "object"}, "operation": {"type": "object"}}
    if part is BAND:
        properties["condition"] = {"type": ["object", "null"]}
    for name in ("fields", "actions", "preconditions"):
        if name in properties:
            properties[name] = {"type": "array", "items": {"type": "string"}}
    for name in part.nested:
        properties[name] = {"type": "array", "items": _part_schema(CHILDREN[name])}
    return {"type": "object", "properties": properties, "required": list(part.required), "additionalProperties": False}


def document_schema() -> dict[str, Any]:
    """The JSON Schema of a policy document (Draft 2020-12)."""
    return {
        "type": "object",
        "properties": {
            "version": {"const": VERSION},
            "systems": {"type": "array", "items": _part_schema(SYSTEM)},
            "agents": {"type": "array", "items": _part_schema(AGENT)},
        },
        "required": ["version", "systems", "agents"],
        "additionalProperties": False,
    }


# --- Load ------------------------------------------------------------------------------------------------------

DOCUMENT = Wording("key", "part of the policy")


def _plain(value: Any) -> Any:
    """YAML's own timestamps and dates (an unquoted 2027-01-31) as the text they were, for the schema and then the
    same parsing as a quoted one."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat() if value.tzinfo else value.isoformat() + "+00:00"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _canonical(part: Part, raw: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """`raw` with every key of `part` present (a missing one: the model's default), each value written as export
    writes it; problems with a value are added to `problems`."""
    entry: dict[str, Any] = {}
    for key in part.keys:
        field = model_field(part, key)
        value = raw.get(key, model_default(field))
        if value is None and isinstance(field, models.JSONField) and not field.null:
            value = model_default(field)  # a condition written as null: none
        try:
            entry[key] = to_document(from_document(field, value))
        except ValueError as exc:
            problems.append(f"{where}.{key}: {exc}")
            entry[key] = value
    entry |= {key: sorted(entry[key]) for key in part.sets}
    for name in part.nested:
        child = CHILDREN[name]
        items = [_canonical(child, item, f"{where}.{name}.{n}", problems) for n, item in enumerate(raw.get(name, []))]
        seen: set[tuple[str, ...]] = set()
        for number, item in enumerate(items):
            named = identity(child, item)
            if child.identity and named in seen:
                said = ", ".join(f"{key} {value or 'none'}" for key, value in zip(child.identity, named, strict=True))
                problems.append(f"{where}.{name}.{number}: a second entry with {said}.")
            seen.add(named)
        entry[name] = sorted(items, key=list_order(child))
    return entry


def parse(text: str) -> dict[str, Any]:
    """YAML text to a canonical document; PolicyError with every problem of its shape and values."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError([f"Not YAML: {exc}"]) from None
    raw = _plain(raw)
    if not isinstance(raw, dict):
        raise PolicyError(["A policy document is a YAML mapping with version, systems and agents."])
    errors = schema_errors(document_schema(), raw, wording=DOCUMENT)
    if errors:
        raise PolicyError(f"{path}: {message}" for path, message in errors.items())
    problems: list[str] = []
    systems = [_canonical(SYSTEM, s, f"systems.{n}", problems) for n, s in enumerate(raw["systems"])]
    agents = [_canonical(AGENT, a, f"agents.{n}", problems) for n, a in enumerate(raw["agents"])]
    for label, items in (("systems", systems), ("agents", agents)):
        slugs = [item["slug"] for item in items]
        problems += [f"{label}: {slug} is listed twice." for slug in sorted({s for s in slugs if slugs.count(s) > 1})]
    if problems:
        raise PolicyError(problems)
    return ordered(systems, agents)


def load(text: str) -> dict[str, Any]:
    """`parse`, then what only the database and the document together can say: people and groups exist, each
    reference names something in the document, each rule's bands fit together (`validate_bands`)."""
    document = parse(text)
    problems = references(document)
    if problems:
        raise PolicyError(problems)
    return document


def references(document: dict[str, Any]) -> list[str]:
    """Problems with what the document names: unknown users and groups, a resource, an action or a staging twin not
    in the document, bands that do not fit together."""
    problems: list[str] = []
    usernames, groups = set(), set()
    systems = {system["slug"]: system for system in document["systems"]}
    for system in document["systems"]:
        where = f"system {system['slug']}"
        usernames.add((system["owner"], f"{where}: owner"))
        if system["staging_twin"] and system["staging_twin"] not in systems:
            problems.append(f"{where}: its staging twin {system['staging_twin']} is not a system in the document.")
        if system["staging_twin"] == system["slug"]:
            problems.append(f"{where}: a system cannot be its own staging twin.")
        resources = {resource["name"] for resource in system["resources"]}
        actions = {action["name"]: action for action in system["actions"]}
        for action in system["actions"]:
            if action["resource"] not in resources:
                problems.append(f"{where}: action {action['name']} is on resource {action['resource']}, not listed.")
        for rule in system["rules"]:
            label = f"{where}: rule {rule['name']}"
            if rule["action_type"] is not None and rule["action_type"] not in actions:
                problems.append(f"{label}: {system['slug']} has no action {rule['action_type']} in the document.")
                continue
            for number, band in enumerate(rule["bands"], start=1):
                for key in ("approver",):
                    if band[key]:
                        usernames.add((band[key], f"{label}, band {number}: {key}"))
                for key in ("approver_group", "review_group"):
                    if band[key]:
                        groups.add((band[key], f"{label}, band {number}: {key.replace('_', ' ')}"))
            problems += [f"{label}: {problem}" for problem in _band_problems(rule, actions.get(rule["action_type"]))]
    for agent in document["agents"]:
        where = f"agent {agent['slug']}"
        usernames.add((agent["owner"], f"{where}: owner"))
        for grant in agent["grants"]:
            system = systems.get(grant["system"])
            if system is None:
                problems.append(f"{where}: a grant on {grant['system']}, which is not a system in the document.")
            elif grant["resource"] not in {resource["name"] for resource in system["resources"]}:
                problems.append(f"{where}: a grant on {grant['system']} {grant['resource']}, not a listed resource.")
        for budget in agent["budgets"]:
            if budget["system"] not in systems:
                problems.append(f"{where}: a budget on {budget['system']}, which is not a system in the document.")
    known_users = set(
        User.objects.filter(username__in={name for name, _ in usernames}).values_list("username", flat=True)
    )
    problems += [
        f"{where} {name}: no such user (apply_policy never creates people)."
        for name, where in sorted(usernames, key=lambda item: item[1])
        if name not in known_users
    ]
    known_groups = set(Group.objects.filter(name__in={name for name, _ in groups}).values_list("name", flat=True))
    problems += [
        f"{where} {name}: no such group."
        for name, where in sorted(groups, key=lambda i: i[1])
        if name not in known_groups
    ]
    return problems


def _band_problems(rule: dict[str, Any], action: dict[str, Any] | None) -> list[str]:
    """The rule's bands checked together, as every door checks them (`validate_bands`)."""
    specs = []
    for band in rule["bands"]:
        specs.append(
            BandSpec(
                min_amount=Decimal(band["min_amount"]),
                max_amount=Decimal(band["max_amount"]) if band["max_amount"] is not None else None,
                mode=band["mode"],
                has_approver=bool(band["approver"] or band["approver_group"]),
                has_review_group=bool(band["review_group"]),
                sla=parse_duration_words(band["sla"]) if band["sla"] else None,
                condition=band["condition"] or {},
            )
        )
    target = ActionType(name=action["name"], payload_schema=action["payload_schema"]) if action else None
    try:
        validate_bands(specs, action=target)
    except ValidationError as exc:
        return list(exc.messages)
    return []
