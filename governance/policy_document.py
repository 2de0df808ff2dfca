"""Policy as code: the inventory's terms as one YAML document, written the same way every time and read back checked.

`export_text()` writes systems (with their resources, actions and threshold rules and bands) and agents (with their
scope grants and budgets), with people named by username, durations in words ("4 hours") and amounts as decimal
strings ("500.00"). Keys come in a fixed order, lists sorted by their keys and JSON objects by theirs, so the same
inventory always gives the same bytes and a change shows as a small diff in git.

`load()` reads a document back into the same canonical form (what `export_document()` returns): the shape checked
against a JSON Schema built from the models' own fields, then what a schema cannot say (people and groups that exist,
references within the document, durations and amounts, names used twice, the bands of each rule together through
`validate_bands`). Every problem is listed with where it is; nothing is read from a half-valid document.

What the document deliberately leaves out is said in its header (`HEADER`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.dateparse import parse_datetime

from core.durations import duration_words, parse_duration_words
from core.schema import Wording, schema_errors
from governance.models import (
    ActionType,
    Agent,
    AgentBudget,
    BandSpec,
    Resource,
    ScopeGrant,
    System,
    ThresholdBand,
    ThresholdRule,
    validate_bands,
)
from governance.models.rules import condition_key

VERSION = 1

HEADER = """\
# Gatehouse policy: the inventory's terms, exported by `python manage.py export_policy`.
# Review a change in git, then `python manage.py apply_policy FILE --plan` says what it would change, and
# `python manage.py apply_policy FILE --apply --as USERNAME --reason TEXT` makes it as that person. A threshold
# rule it changes is not in force until its business owner signs it off in the admin.
#
# Left out on purpose:
# - secrets: credentials stay in the vault and agents' tokens are never exported;
# - people and roles: named by username (and group name), never created by apply_policy;
# - database ids, creation times, who granted a scope and when;
# - sign-off state (who signed off a rule, when): an applied rule is signed off in the admin, four eyes;
# - history and the audit trail; a system's kill-switch freeze (an agent's status is kept: apply_policy changes it
#   through the agent's kill switch); readiness overrides; rollback drills.
# The same inventory always gives the same document, byte for byte.
"""


class PolicyError(Exception):
    """A document that cannot be read or applied, with every problem found, each naming where it is."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class Part:
    """One kind of entry of the document: the model it describes, its keys in document order, the keys that identify
    it within its parent (a system's slug, a rule's action), and the keys a new entry must give."""

    model: type[models.Model]
    keys: tuple[str, ...]
    identity: tuple[str, ...]
    required: tuple[str, ...] = ()
    nested: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()  # lists of names whose order means nothing: sorted, so a reordering is no change


SYSTEM = Part(
    System,
    (
        "slug",
        "name",
        "description",
        "category",
        "environment",
        "integration_pattern",
        "record_of",
        "conflict_winner",
        "owner",
        "rollback_contact",
        "oncall_contact",
        "write_mode",
        "staging_twin",
        "drill_record_id",
        "connector_kind",
        "connector_config",
        "rate_limit_per_minute",
        "rate_limit_burst",
        "breaker_threshold",
        "breaker_cooldown",
    ),
    identity=("slug",),
    required=("slug", "name", "category", "integration_pattern", "connector_kind", "owner"),
    nested=("resources", "actions", "rules"),
)
RESOURCE = Part(Resource, ("name", "label", "fields"), identity=("name",), required=("name", "label"))
ACTION = Part(
    ActionType,
    (
        "name",
        "resource",
        "description",
        "payload_schema",
        "impact_kind",
        "impact_field",
        "impact_currency",
        "preconditions",
        "operation",
        "compensation",
        "not_reversible_note",
    ),
    identity=("name",),
    required=("name", "resource", "payload_schema"),
)
RULE = Part(
    ThresholdRule,
    (
        "action_type",
        "name",
        "currency",
        "max_age",
        "owner_may_not_approve",
        "cumulative_scope",
        "cumulative_window",
        "auto_executes_irreversible",
    ),
    identity=("action_type",),
    required=("action_type", "name", "bands"),
    nested=("bands",),
)
BAND = Part(
    ThresholdBand,
    (
        "min_amount",
        "max_amount",
        "mode",
        "approver",
        "approver_group",
        "sla",
        "review_group",
        "review_timing",
        "review_within",
        "condition",
    ),
    identity=(),
    required=("min_amount", "mode"),
)
AGENT = Part(
    Agent,
    ("slug", "name", "description", "owner", "status"),
    identity=("slug",),
    required=("slug", "name", "owner"),
    nested=("grants", "budgets"),
)
GRANT = Part(
    ScopeGrant,
    ("system", "resource", "access", "fields", "actions", "justification", "expires_at"),
    identity=("system", "resource", "access"),
    required=("system", "resource", "access", "justification"),
    sets=("fields", "actions"),
)
BUDGET = Part(
    AgentBudget,
    ("system", "window", "max_amount", "currency", "max_writes"),
    identity=("system",),
    required=("system",),
)
CHILDREN: dict[str, Part] = {
    "resources": RESOURCE,
    "actions": ACTION,
    "rules": RULE,
    "bands": BAND,
    "grants": GRANT,
    "budgets": BUDGET,
}


# --- Values: from the model to the document and back ----------------------------------------------------------

CENT = Decimal("0.01")


def json_sorted(value: Any) -> Any:
    """A JSON value with every object's keys in order, so the document does not depend on how the database keeps it."""
    if isinstance(value, dict):
        return {str(key): json_sorted(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list):
        return [json_sorted(item) for item in value]
    return value


def model_field(part: Part, key: str) -> models.Field:
    return part.model._meta.get_field(key)  # type: ignore[return-value]


def to_document(value: Any) -> Any:
    """A model value as the document writes it; related rows by their name (users by username)."""
    if isinstance(value, User):
        return value.get_username()
    if isinstance(value, Group):
        return value.name
    if isinstance(value, System | Agent):
        return value.slug
    if isinstance(value, Resource | ActionType):
        return value.name
    if isinstance(value, timedelta):
        return duration_words(value)
    if isinstance(value, Decimal):
        return str(value.quantize(CENT))
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict | list):
        return json_sorted(value)
    return value


def from_document(field: models.Field, value: Any) -> Any:
    """A document's value as the model takes it (a related row stays a name: `policy_apply` looks it up). Raises
    ValueError with a message for a person."""
    if value is None:
        return None
    if isinstance(field, models.DurationField):
        try:
            return parse_duration_words(str(value))
        except ValidationError as exc:
            raise ValueError(exc.messages[0]) from None
    if isinstance(field, models.DecimalField):
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"{value!r} is not an amount; write it as a decimal string, e.g. '500.00'.") from None
        if not number.is_finite() or number != number.quantize(CENT):
            raise ValueError(f"{value!r} is not an amount with at most two decimal places.")
        return number.quantize(CENT)
    if isinstance(field, models.DateTimeField):
        moment = value if isinstance(value, datetime) else parse_datetime(str(value))
        if moment is None or moment.tzinfo is None:
            raise ValueError(f"{value!r} is not a date and time with its time zone, e.g. 2027-01-31T00:00:00+00:00.")
        return moment
    return value


def _default(field: models.Field) -> Any:
    if field.is_relation:
        return None
    default = field.get_default()
    return [] if default is None and isinstance(field, models.JSONField) and not field.null else default


# --- Export -----------------------------------------------------------------------------------------------------


def _entry(part: Part, obj: models.Model) -> dict[str, Any]:
    entry = {key: to_document(getattr(obj, key)) for key in part.keys}
    return entry | {key: sorted(entry[key]) for key in part.sets}


def _band_order(band: dict[str, Any]) -> tuple[bool, str, Decimal]:
    """A band's place: the ladder without a condition first, then each condition's; within one, by lower bound (0
    when unreadable: reported elsewhere)."""
    try:
        lower = Decimal(band["min_amount"])
    except (InvalidOperation, TypeError, KeyError):
        lower = Decimal(0)
    condition = band.get("condition") if isinstance(band.get("condition"), dict) else {}
    return bool(condition), condition_key(condition), lower


def export_document() -> dict[str, Any]:
    """The whole inventory's terms, in canonical form (the shape `load` returns)."""
    systems = []
    for system in System.objects.select_related("owner", "staging_twin"):
        entry = _entry(SYSTEM, system)
        entry["resources"] = [_entry(RESOURCE, r) for r in system.resources.all()]
        entry["actions"] = [_entry(ACTION, a) for a in system.action_types.select_related("resource")]
        rules = []
        for rule in system.threshold_rules.select_related("action_type").prefetch_related(
            "bands__approver", "bands__approver_group", "bands__review_group"
        ):
            item = _entry(RULE, rule)
            item["bands"] = [_entry(BAND, band) for band in rule.bands.all()]
            rules.append(item)
        entry["rules"] = rules
        systems.append(entry)
    agents = []
    for agent in Agent.objects.select_related("owner"):
        entry = _entry(AGENT, agent)
        entry["grants"] = [_entry(GRANT, grant) for grant in agent.grants.select_related("system", "resource")]
        entry["budgets"] = [_entry(BUDGET, budget) for budget in agent.budgets.select_related("system")]
        agents.append(entry)
    return _ordered([_sorted(SYSTEM, s) for s in systems], [_sorted(AGENT, a) for a in agents])


def _sorted(part: Part, entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` with its nested lists in the document's order, sorted here rather than by the database, whose
    collation may order "add-note" and "add_note" otherwise."""
    for name in part.nested:
        child = CHILDREN[name]
        entry[name] = sorted((_sorted(child, item) for item in entry[name]), key=_order(child))
    return entry


def _order(part: Part) -> Callable[[dict[str, Any]], Any]:
    """How a list of `part` entries is sorted: by their identity; bands by condition and lower bound."""
    if part is BAND:
        return _band_order
    return lambda entry: _identity(part, entry)


def dump(document: dict[str, Any]) -> str:
    """The document as YAML after the header: keys in the order given, block style, no line folding."""
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10_000)
    return HEADER + body


def export_text() -> str:
    return dump(export_document())


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


def _identity(part: Part, entry: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(entry.get(key) or "") for key in part.identity)


def _canonical(part: Part, raw: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """`raw` with every key of `part` present (a missing one: the model's default), each value written as export
    writes it; problems with a value are added to `problems`."""
    entry: dict[str, Any] = {}
    for key in part.keys:
        field = model_field(part, key)
        value = raw.get(key, _default(field))
        if value is None and isinstance(field, models.JSONField) and not field.null:
            value = _default(field)  # a condition written as null: none
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
            identity = _identity(child, item)
            if child.identity and identity in seen:
                said = ", ".join(
                    f"{key} {value or 'none'}" for key, value in zip(child.identity, identity, strict=True)
                )
                problems.append(f"{where}.{name}.{number}: a second entry with {said}.")
            seen.add(identity)
        entry[name] = sorted(items, key=_order(child))
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
    return _ordered(systems, agents)


def _ordered(systems: list[dict[str, Any]], agents: list[dict[str, Any]]) -> dict[str, Any]:
    by_slug: Callable[[dict[str, Any]], str] = lambda entry: entry["slug"]  # noqa: E731
    return {"version": VERSION, "systems": sorted(systems, key=by_slug), "agents": sorted(agents, key=by_slug)}


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
