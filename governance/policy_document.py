"""Policy as code: the inventory's terms as one YAML document, written the same way every time and read back checked.

`export_text()` writes systems (with their resources, actions and threshold rules and bands) and agents (with their
scope grants and budgets), with people named by username, durations in words ("4 hours") and amounts as decimal
strings ("500.00"). Keys come in a fixed order, lists sorted by their keys and JSON objects by theirs, so the same
inventory always gives the same bytes and a change shows as a small diff in git.

The parts of the document (`Part`: which model, which keys, what identifies an entry) and the conversion of each value
are shared with reading it back (governance/policy_load.py), which gives the same canonical form.

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
from governance.models import (
    ActionType,
    Agent,
    AgentBudget,
    Resource,
    ScopeGrant,
    System,
    ThresholdBand,
    ThresholdRule,
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


def model_default(field: models.Field) -> Any:
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
    return ordered([_sorted(SYSTEM, s) for s in systems], [_sorted(AGENT, a) for a in agents])


def identity(part: Part, entry: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(entry.get(key) or "") for key in part.identity)


def _sorted(part: Part, entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` with its nested lists in the document's order, sorted here rather than by the database, whose
    collation may order "add-note" and "add_note" otherwise."""
    for name in part.nested:
        child = CHILDREN[name]
        entry[name] = sorted((_sorted(child, item) for item in entry[name]), key=list_order(child))
    return entry


def list_order(part: Part) -> Callable[[dict[str, Any]], Any]:
    """How a list of `part` entries is sorted: by their identity; bands by condition and lower bound."""
    if part is BAND:
        return _band_order
    return lambda entry: identity(part, entry)


def ordered(systems: list[dict[str, Any]], agents: list[dict[str, Any]]) -> dict[str, Any]:
    by_slug: Callable[[dict[str, Any]], str] = lambda entry: entry["slug"]  # noqa: E731
    return {"version": VERSION, "systems": sorted(systems, key=by_slug), "agents": sorted(agents, key=by_slug)}


def dump(document: dict[str, Any]) -> str:
    """The document as YAML after the header: keys in the order given, block style, no line folding."""
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10_000)
    return HEADER + body


def export_text() -> str:
    return dump(export_document())
