"""A configuration change in words: "actions: add_note → add_note, set_credit_limit", one phrase per field.

Shared by the `configured` event's summary (governance.configuration), its timeline line and its admin page, from
the event's state before and after. A value that is itself a mapping is an inline row (a rule's band): added,
deleted, or changed field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _human(name: str) -> str:
    return name.replace("_", " ")


def shown(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "(empty)"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{_human(str(k))}: {shown(v)}" for k, v in value.items())
    text = str(value)
    return text if len(text) <= 80 else text[:79] + "…"


def change_phrases(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[str]:
    """One phrase per changed field or row; a whole object added or deleted (one side None) lists its fields."""
    old_all, new_all = before or {}, after or {}
    phrases = []
    for name in dict.fromkeys([*old_all, *new_all]):
        old, new = old_all.get(name), new_all.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
            inner = [f"{_human(k)}: {shown(old.get(k))} → {shown(new.get(k))}" for k in keys]
            phrases.append(f"{name} " + ", ".join(inner))
        elif isinstance(new, dict) and old is None and before is not None:
            phrases.append(f"added {name} ({shown(new)})")
        elif isinstance(old, dict) and new is None and after is not None:
            phrases.append(f"deleted {name} ({shown(old)})")
        elif before is None:
            phrases.append(f"{_human(name)}: {shown(new)}")
        elif after is None:
            phrases.append(f"{_human(name)} was {shown(old)}")
        else:
            phrases.append(f"{_human(name)}: {shown(old)} → {shown(new)}")
    return phrases


def configuration_text(*, who: str, action: str, what: str, name: str, before: Any, after: Any, reason: str) -> str:
    """ "olivia changed scope grant “crm-bot write crm/accounts”: actions: a → a, b — reason: “…”"."""
    text = f"{who} {action} {what}" + (f" “{name}”" if name else "")
    phrases = change_phrases(before, after)
    if phrases:
        text += ": " + "; ".join(phrases)
    return text + (f" — reason: “{reason}”" if reason else "")
