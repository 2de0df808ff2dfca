"""What applying a policy document would change, as sentences a business owner reads: "band 500–5,000 of Credit
limit changes on crm: approver approver → dana", "new grant: reporting-agent may read crm accounts (name, status)".

`plan(current, wanted)` compares two canonical documents (governance/policy_document.py: the inventory's export and
the file) and returns the changes in the order they are applied: additions and changes from the systems down to the
agents' budgets, then removals from the budgets up, so nothing is removed while something still points at it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import Group, User

from core.durations import parse_duration_words
from governance.models import ThresholdBand, condition_words
from governance.models.rules import condition_key
from governance.policy_document import (
    ACTION,
    AGENT,
    BAND,
    BUDGET,
    GRANT,
    RESOURCE,
    RULE,
    SYSTEM,
    Part,
    model_field,
)
from governance.rule_words import band_words

ADD, CHANGE, REMOVE = "add", "change", "remove"
# The order changes are made in: what others point at first; removals run backwards.
ORDER = ("system", "resource", "action", "rule", "agent", "grant", "budget")
# What a sign-off covers besides the bands (ThresholdRule.content_digest): changing one voids it. The name does not.
SIGNED_TERMS = tuple(key for key in RULE.keys if key not in ("action_type", "name"))
_LABELS = {
    "sla": "SLA",
    "approver_group": "approver group",
    "review_group": "second-review group",
    "review_timing": "second review",
    "review_within": "second review within",
    "max_age": "expiry of undecided proposals",
    "connector_config": "connector settings",
    "connector_kind": "connector",
    "payload_schema": "payload schema",
}


@dataclass
class Change:
    """One entry to add, change or remove: `key` names it within the document (a system's slug, an agent's slug and
    a grant's system, resource and access), `before` / `after` its canonical entries, `words` the plan's sentences."""

    kind: str
    op: str
    key: tuple[Any, ...]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    words: list[str] = field(default_factory=list)


# --- Values in words ----------------------------------------------------------------------------------------------


def money(value: str | Decimal | None) -> str:
    """500.00 as "500", 5000.50 as "5,000.50": amounts as people write thresholds."""
    if value is None:
        return "∞"
    number = Decimal(value)
    return f"{number:,.0f}" if number == number.to_integral_value() else f"{number:,.2f}"


def band_range(band: dict[str, Any]) -> str:
    """ "500–5,000", "5,000 and above", with its condition: "0 and above when status is "closed""."""
    text = (
        f"{money(band['min_amount'])} and above"
        if band["max_amount"] is None
        else f"{money(band['min_amount'])}–{money(band['max_amount'])}"
    )
    return text + (f" when {condition_words(band['condition'])}" if band["condition"] else "")


def _value(part: Part, key: str, value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "none"
    model_field_ = model_field(part, key)
    if model_field_.choices:
        return str(dict(model_field_.flatchoices).get(value, value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if key in ("min_amount", "max_amount") or (part is BUDGET and key == "max_amount"):
        return money(value)
    return str(value)


def _label(part: Part, key: str) -> str:
    return _LABELS.get(key) or str(model_field(part, key).verbose_name)


def _field_changes(
    part: Part, before: dict[str, Any], after: dict[str, Any], *, skip: tuple[str, ...] = ()
) -> list[str]:
    """ "write mode Read only → Enabled", one per key whose value differs."""
    return [
        f"{_label(part, key)} {_value(part, key, before[key])} → {_value(part, key, after[key])}"
        for key in part.keys
        if key not in skip and before[key] != after[key]
    ]


# --- Each kind of entry ------------------------------------------------------------------------------------------


def grant_words(agent: str, grant: dict[str, Any]) -> str:
    """ "reporting-agent may read crm accounts (name, status)"."""
    where = f"{grant['system']} {grant['resource']}"
    if grant["access"] == "read":
        allowed = ", ".join(grant["fields"]) or "every field"
    else:
        allowed = ", ".join(grant["actions"]) or "no action"
    return f"{agent} may {grant['access']} {where} ({allowed})"


def _budget_words(agent: str, budget: dict[str, Any]) -> str:
    amount = f"{money(budget['max_amount'])} {budget['currency']}" if budget["max_amount"] else "any amount"
    writes = f"{budget['max_writes']} writes" if budget["max_writes"] is not None else "any number of writes"
    return f"{agent} on {budget['system']}: at most {amount} and {writes} per {budget['window']}"


def _band_sentence(band: dict[str, Any], currency: str) -> str:
    """A whole band in the words of the rule pages (governance/rule_words.py)."""
    approver = User.objects.filter(username=band["approver"]).first() if band["approver"] else None
    group = Group.objects.filter(name=band["approver_group"]).first() if band["approver_group"] else None
    reviewers = Group.objects.filter(name=band["review_group"]).first() if band["review_group"] else None
    unsaved = ThresholdBand(
        min_amount=Decimal(band["min_amount"]),
        max_amount=Decimal(band["max_amount"]) if band["max_amount"] is not None else None,
        mode=band["mode"],
        approver=approver,
        approver_group=group,
        review_group=reviewers,
        sla=parse_duration_words(band["sla"]) if band["sla"] else None,
        review_timing=band["review_timing"],
        review_within=parse_duration_words(band["review_within"]) if band["review_within"] else None,
        condition=band["condition"],
    )
    return band_words(unsaved, currency)


def _pair_bands(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Which old band became which new one: within each condition's ladder, same bounds first, then in order of
    their bounds (a moved threshold changes two bands, not one removed and one added). Returns (pairs, added,
    removed)."""
    pairs, added, removed = [], [], []
    ladders = dict.fromkeys([condition_key(b["condition"]) for b in before + after])
    for ladder in ladders:
        old = [b for b in before if condition_key(b["condition"]) == ladder]
        new = [b for b in after if condition_key(b["condition"]) == ladder]
        bounds = [(b["min_amount"], b["max_amount"]) for b in new]
        same = [b for b in old if (b["min_amount"], b["max_amount"]) in bounds]
        for band in same:
            twin = next(
                n for n in new if (n["min_amount"], n["max_amount"]) == (band["min_amount"], band["max_amount"])
            )
            pairs.append((band, twin))
            new.remove(twin)
        old = [b for b in old if b not in same]
        pairs += list(zip(old, new, strict=False))
        removed += old[len(new) :]
        added += new[len(old) :]
    return pairs, added, removed


def _rule_changes(system: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    if after is None:
        assert before is not None
        return [f"removed: rule {before['name']} on {system}"]
    what = f"for {after['action_type']}" if after["action_type"] else "(the default for its other actions)"
    if before is None:
        lines = [f"new rule: {after['name']} on {system} {what}, with {len(after['bands'])} band(s):"]
        return lines + [f"  {_band_sentence(band, after['currency'])}" for band in after["bands"]]
    name = after["name"]
    lines = [f"{name}: {change}" for change in _field_changes(RULE, before, after)]
    pairs, added, removed = _pair_bands(before["bands"], after["bands"])
    for old, new in pairs:
        changes = _field_changes(BAND, old, new, skip=("min_amount", "max_amount", "condition"))
        if (old["min_amount"], old["max_amount"]) != (new["min_amount"], new["max_amount"]):
            changes.insert(0, f"bounds {band_range(old)} → {band_range(new)}")
        lines += [f"band {band_range(old)} of {name}: {change}" for change in changes]
    lines += [f"new band of {name}: {_band_sentence(band, after['currency'])}" for band in added]
    lines += [f"removed: band {band_range(band)} of {name}" for band in removed]
    signed = any(before[key] != after[key] for key in SIGNED_TERMS) or before["bands"] != after["bands"]
    if signed:
        lines.append(f"{name} is then not in force until its business owner signs it off in the admin.")
    return lines


def _system_added(entry: dict[str, Any], parent: str) -> str:
    environment = _value(SYSTEM, "environment", entry["environment"]).lower()
    writes = _value(SYSTEM, "write_mode", entry["write_mode"]).lower()
    return f"new system: {entry['slug']} ({entry['name']}), owned by {entry['owner']}, {environment}, writes {writes}"


# Per kind: its part, what it is called in a sentence, and the sentence of a new one. (Rules have their own.)
_KINDS: dict[str, tuple[Part, Callable[[dict[str, Any], str], str], Callable[[dict[str, Any], str], str]]] = {
    "system": (SYSTEM, lambda e, p: f"system {e['slug']}", _system_added),
    "resource": (
        RESOURCE,
        lambda e, p: f"resource {p} {e['name']}",
        lambda e, p: f"new resource: {p} {e['name']} ({', '.join(e['fields']) or 'no fields'})",
    ),
    "action": (
        ACTION,
        lambda e, p: f"action {e['name']} on {p}",
        lambda e, p: f"new action: {e['name']} on {p} {e['resource']} ({e['description'] or 'no description'})",
    ),
    "agent": (
        AGENT,
        lambda e, p: f"agent {e['slug']}",
        lambda e, p: f"new agent: {e['slug']} ({e['name']}), owned by {e['owner']}",
    ),
    "grant": (
        GRANT,
        lambda e, p: f"{p}'s {e['access']} grant on {e['system']} {e['resource']}",
        lambda e, p: f"new grant: {grant_words(p, e)}",
    ),
    "budget": (
        BUDGET,
        lambda e, p: f"budget of {p} on {e['system']}",
        lambda e, p: f"new budget: {_budget_words(p, e)}",
    ),
}


def _entry_words(kind: str, op: str, parent: str, before: dict | None, after: dict | None) -> list[str]:
    if kind == "rule":
        return _rule_changes(parent, before, after)
    part, name, added = _KINDS[kind]
    if after is None:
        assert before is not None
        return [
            f"removed grant: {grant_words(parent, before)}" if kind == "grant" else f"removed: {name(before, parent)}"
        ]
    if before is None:
        return [added(after, parent)]
    return [f"{name(after, parent)}: {change}" for change in _field_changes(part, before, after)]


# --- The plan -----------------------------------------------------------------------------------------------------


def _flat(document: dict[str, Any]) -> dict[tuple[Any, ...], tuple[str, str, dict[str, Any]]]:
    """Every entry by (kind, its key), with its parent's slug; an entry without its nested lists (those are entries of
    their own), except a rule, whose bands are part of it."""
    entries: dict[tuple[Any, ...], tuple[str, str, dict[str, Any]]] = {}
    for system in document["systems"]:
        slug = system["slug"]
        entries[("system", slug)] = ("system", "", {k: v for k, v in system.items() if k not in SYSTEM.nested})
        for resource in system["resources"]:
            entries[("resource", slug, resource["name"])] = ("resource", slug, resource)
        for action in system["actions"]:
            entries[("action", slug, action["name"])] = ("action", slug, action)
        for rule in system["rules"]:
            entries[("rule", slug, rule["action_type"])] = ("rule", slug, rule)
    for agent in document["agents"]:
        slug = agent["slug"]
        entries[("agent", slug)] = ("agent", "", {k: v for k, v in agent.items() if k not in AGENT.nested})
        for grant in agent["grants"]:
            entries[("grant", slug, grant["system"], grant["resource"], grant["access"])] = ("grant", slug, grant)
        for budget in agent["budgets"]:
            entries[("budget", slug, budget["system"])] = ("budget", slug, budget)
    return entries


def plan(current: dict[str, Any], wanted: dict[str, Any]) -> list[Change]:
    """The changes that make `current` into `wanted`, in the order they are applied; [] when they are the same."""
    old, new = _flat(current), _flat(wanted)
    ahead: list[Change] = []
    behind: list[Change] = []
    for key in dict.fromkeys([*old, *new]):
        kind = key[0]
        before = old[key][2] if key in old else None
        after = new[key][2] if key in new else None
        if before == after:
            continue
        parent = (new.get(key) or old[key])[1]
        op = ADD if before is None else REMOVE if after is None else CHANGE
        change = Change(kind, op, key, before, after, _entry_words(kind, op, parent, before, after))
        (behind if op == REMOVE else ahead).append(change)
    ahead.sort(key=lambda change: ORDER.index(change.kind))  # stable: the document's order within a kind
    behind.sort(key=lambda change: -ORDER.index(change.kind))
    return ahead + behind


def plan_text(changes: list[Change]) -> str:
    """The plan as a person reads it: one line per difference, or that there is none."""
    if not changes:
        return "No changes: the inventory already says what the document says."
    count = len(changes)  # a rule with its bands is one entry, however many of its terms changed
    lines = [
        "1 entry of the inventory differs from the document:"
        if count == 1
        else f"{count} entries of the inventory differ from the document:"
    ]
    for change in changes:
        lines += [f"    {line.strip()}" if line.startswith("  ") else f"- {line}" for line in change.words]
    return "\n".join(lines)
