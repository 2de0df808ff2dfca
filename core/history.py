"""Readable change history: simple-history records turned into "field: old → new" lines with who and when.

Domain-free: any history-tracked model's admin shows its history through these lines (core.admin.HistoryAdmin);
the inventory adds the sign-off context of threshold rules (governance.history).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from django.utils import timezone
from django.utils.text import capfirst
from simple_history.models import DeletedObject
from simple_history.template_utils import ObjDiffDisplay

EMPTY = "(empty)"
CHANGE_KINDS = {"+": "created", "~": "changed", "-": "deleted"}

# Long values (descriptions, connector settings) are shortened around their first difference, as simple-history does.
_shorten = ObjDiffDisplay(max_length=100).common_shorten_repr


@dataclass(frozen=True)
class FieldChange:
    """One field of one record: `old` is None when the record was created with `new`."""

    label: str
    old: str | None
    new: str

    def __str__(self) -> str:
        if self.old is None:
            return f"{self.label}: {self.new}"
        return f"{self.label}: {self.old} → {self.new}"


@dataclass(frozen=True)
class HistoryLine:
    """One change as shown on a history page.

    `version_id` is the history_id of the object's own record this line is listed under: its own for the object's
    changes, the rule version in force at the time for a band's. `own` tells the two apart.
    """

    when: datetime
    who: str
    change: str  # created / changed / deleted
    subject: str  # "" for the object itself; "band 500.00–5,000.00" for a band of a rule
    changes: tuple[FieldChange, ...]
    reason: str
    version_id: int
    own: bool
    sign_off: str = ""

    def __str__(self) -> str:
        what = f"{self.change} {self.subject}" if self.subject else self.change
        parts = [f"{self.when:%Y-%m-%d %H:%M}", self.who, what, "; ".join(map(str, self.changes)) or "no field changed"]
        if self.sign_off:
            parts.append(self.sign_off)
        return " · ".join(parts)


# --- values ---------------------------------------------------------------------------------------------------------


def person(user: AbstractBaseUser | None) -> str:
    """A user as people know them: full name, else user name."""
    if user is None:
        return ""
    full_name = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return full_name or user.get_username()


def duration(value: timedelta) -> str:
    """4:00:00 as "4 h", 3 days as "3 days", 90 minutes as "1 h 30 min"."""
    total = int(value.total_seconds())
    sign, total = ("-", -total) if total < 0 else ("", total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = []
    if days:
        parts.append(f"{days} day" if days == 1 else f"{days} days")
    if hours:
        parts.append(f"{hours} h")
    if minutes:
        parts.append(f"{minutes} min")
    if seconds or not parts:
        parts.append(f"{seconds} s")
    return sign + " ".join(parts)


def amount(value: Decimal | None, places: int = 2) -> str:
    return EMPTY if value is None else f"{value:,.{places}f}"


def display_value(field: models.Field, value: Any) -> str:
    """A field's value as the admin would show it: choice labels, related rows by name, amounts, durations."""
    if isinstance(value, DeletedObject):
        # diff_against() marks an empty foreign key as a deleted object with no key.
        value = None if value.pk is None else f"deleted {value.model._meta.verbose_name} #{value.pk}"
    if value is None or value == "" or value == [] or value == {}:
        return EMPTY
    if field.choices:
        return str(dict(field.flatchoices).get(value, value))
    if isinstance(value, AbstractBaseUser):
        return person(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return amount(value, getattr(field, "decimal_places", None) or 2)
    if isinstance(value, timedelta):
        return duration(value)
    if isinstance(value, datetime):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z") if timezone.is_aware(value) else str(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ", ".join(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def who(record: Any) -> str:
    """The history user by name; without one, the origin named in the change reason, else "system"."""
    if record.history_user_id and record.history_user is not None:
        return person(record.history_user)
    for part in (record.history_change_reason or "").replace(";", " ").split():
        if part.startswith("origin="):
            return part.removeprefix("origin=")
    return "system"


# --- diffs ----------------------------------------------------------------------------------------------------------


def _label(field: models.Field) -> str:
    return str(capfirst(field.verbose_name))


def _diffed_fields(record: Any, exclude: Iterable[str]) -> list[models.Field]:
    """The fields diff_against() compares by default (tracked and editable), in the model's order; not the id."""
    return [
        field
        for field in record.tracked_fields
        if field.editable and not field.primary_key and field.name not in exclude
    ]


def _initial_value(record: Any, field: models.Field) -> Any:
    if isinstance(field, models.ForeignKey):
        if getattr(record, field.attname) is None:
            return None
        try:
            return getattr(record, field.name)
        except ObjectDoesNotExist:
            return DeletedObject(field.related_model, getattr(record, field.attname))
    return getattr(record, field.attname)


def field_changes(record: Any, previous: Any | None, exclude: Iterable[str] = ()) -> tuple[FieldChange, ...]:
    """What `record` changed since `previous`, by simple-history's diff; a record without one lists its values."""
    exclude = set(exclude)
    fields = _diffed_fields(record, exclude)
    if previous is None:
        if record.history_type == "-":
            return ()
        shown = []
        for field in fields:
            value = display_value(field, _initial_value(record, field))
            if value != EMPTY:
                shown.append(FieldChange(_label(field), None, _shorten(value)[0]))
        return tuple(shown)
    delta = record.diff_against(previous, excluded_fields=exclude, foreign_keys_are_objs=True)
    by_name = {change.field: change for change in delta.changes}
    changes = []
    for field in fields:
        change = by_name.get(field.name)
        if change is None:
            continue
        old, new = _shorten(display_value(field, change.old), display_value(field, change.new))
        changes.append(FieldChange(_label(field), old, new))
    return tuple(changes)


def _chronological(records: Iterable[Any]) -> list[Any]:
    return sorted(records, key=lambda record: (record.history_date, record.history_id))


def record_lines(
    records: Iterable[Any], *, before: Any | None = None, exclude: Sequence[str] = ()
) -> list[HistoryLine]:
    """One line per historical record of one object, newest first, each diffed against the one before it.

    `before` is the record preceding the oldest of `records` (when they are one page of a longer history).
    """
    lines = []
    previous = before
    for record in _chronological(records):
        lines.append(
            HistoryLine(
                when=record.history_date,
                who=who(record),
                change=CHANGE_KINDS[record.history_type],
                subject="",
                changes=field_changes(record, None if record.history_type == "+" else previous, exclude),
                reason=record.history_change_reason or "",
                version_id=record.history_id,
                own=True,
            )
        )
        previous = record
    lines.reverse()
    return lines


def window_words(window: timedelta) -> str:
    """A counting window as decisions and rule pages say it: 24 h, 7 days, 90 min (a day reads "24 h", as rules
    are written; `duration` says "1 day")."""
    seconds = int(window.total_seconds())
    if seconds % 86400 == 0 and seconds > 86400:
        return f"{seconds // 86400} days"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min"
