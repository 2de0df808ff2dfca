"""Readable change history: simple-history records turned into "field: old → new" lines with who, when and sign-off."""

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

from governance.models import ThresholdBand, ThresholdRule

EMPTY = "(empty)"
CHANGE_KINDS = {"+": "created", "~": "changed", "-": "deleted"}

# The sign-off context of a line on a threshold rule's page.
SIGNED_OFF = "signed off by {signer}"
VOIDED = "sign-off voided by this edit"
RESTORED = "{signer}'s sign-off in effect again: the terms are back to those signed"
IN_EFFECT = "under {signer}'s sign-off"
VOID = "sign-off void: edited since {signer} signed off"
NOT_SIGNED_OFF = "not signed off"

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


# --- threshold rules and their bands --------------------------------------------------------------------------------


def band_label(band: Any) -> str:
    upper = "∞" if band.max_amount is None else amount(band.max_amount)
    return f"band {amount(band.min_amount)}–{upper}"


def _digest(rule_record: Any, band_records: Iterable[Any]) -> str:
    """The digest of the rule as it stood, computed by the model itself so this page and `is_signed_off` agree.

    The bands of that moment are handed over as a prefetch would, so `content_digest()` reads them, not today's.
    """
    rule = rule_record.instance
    bands = ThresholdBand.objects.none()
    bands._result_cache = [record.instance for record in band_records]
    bands._prefetch_done = True  # type: ignore[attr-defined]
    rule._prefetched_objects_cache = {ThresholdRule.bands.rel.cache_name: bands}
    return rule.content_digest()


def _signer(rule_record: Any) -> str:
    return person(rule_record.signed_off_by) if rule_record.signed_off_by_id else ""


def _sign_off_in_effect(rule_record: Any | None, bands: dict[int, Any]) -> bool:
    if rule_record is None or rule_record.history_type == "-" or not rule_record.signed_off_digest:
        return False
    return rule_record.signed_off_by_id is not None and rule_record.signed_off_digest == _digest(
        rule_record, bands.values()
    )


def _sign_off_context(*, before: bool, after: bool, signed_now: bool, rule_record: Any) -> str:
    signer = _signer(rule_record)
    if signed_now and after:
        return SIGNED_OFF.format(signer=signer)
    if before and not after:
        return VOIDED
    if after and not before:
        return RESTORED.format(signer=signer)
    if after:
        return IN_EFFECT.format(signer=signer)
    return VOID.format(signer=signer) if signer else NOT_SIGNED_OFF


def threshold_rule_lines(rule_records: Iterable[Any], band_records: Iterable[Any]) -> list[HistoryLine]:
    """The rule's history and its bands', interleaved by time, newest first, each line with its sign-off context.

    A sign-off holds while the rule and its bands hash to the digest it stored: the first edit after it says it
    voided it; an edit that puts back exactly the signed terms brings it back into effect, as `is_signed_off` would.
    """
    events = [(record.history_date, 0, record.history_id, record) for record in rule_records]
    events += [(record.history_date, 1, record.history_id, record) for record in band_records]
    events.sort(key=lambda event: event[:3])  # same instant: the rule first, as the admin saves it before its bands

    rule: Any | None = None
    bands: dict[int, Any] = {}
    previous_band: dict[int, Any] = {}
    lines = []
    after = False  # whether a sign-off is in effect after the event; the next event's `before`
    for _, is_band, _, record in events:
        before = after
        if is_band:
            previous = previous_band.get(record.id)
            if record.history_type == "-":
                bands.pop(record.id, None)
            else:
                bands[record.id] = record
            previous_band[record.id] = record
            after = _sign_off_in_effect(rule, bands)
            if rule is None:  # a band row older than every rule row: history rows were pruned
                continue
            lines.append(
                HistoryLine(
                    when=record.history_date,
                    who=who(record),
                    change=CHANGE_KINDS[record.history_type],
                    subject=band_label(previous if previous is not None and record.history_type == "~" else record),
                    changes=field_changes(record, None if record.history_type == "+" else previous, ["rule"]),
                    reason=record.history_change_reason or "",
                    version_id=rule.history_id,
                    own=False,
                    sign_off=_sign_off_context(before=before, after=after, signed_now=False, rule_record=rule),
                )
            )
            continue

        previous_rule, rule = rule, record
        after = _sign_off_in_effect(rule, bands)
        signed_now = bool(record.signed_off_at) and (
            previous_rule is None or previous_rule.signed_off_at != record.signed_off_at
        )
        line_who = who(record)
        if signed_now and record.history_user_id is None and record.signed_off_by_id:
            line_who = _signer(record)  # signed off outside a request (seeding, a command): the signer did it
        lines.append(
            HistoryLine(
                when=record.history_date,
                who=line_who,
                change=CHANGE_KINDS[record.history_type],
                subject="",
                changes=field_changes(record, None if record.history_type == "+" else previous_rule),
                reason=record.history_change_reason or "",
                version_id=record.history_id,
                own=True,
                sign_off=""
                if record.history_type == "-"
                else _sign_off_context(before=before, after=after, signed_now=signed_now, rule_record=record),
            )
        )
    lines.reverse()
    return lines


def threshold_rule_history(rule_id: int) -> list[HistoryLine]:
    """Every line of a rule's history page, bands included (a rule has a handful of versions: no paging needed)."""
    rule_records = ThresholdRule.history.filter(id=rule_id).select_related("history_user", "signed_off_by")
    band_records = ThresholdBand.history.filter(rule_id=rule_id).select_related(
        "history_user", "approver", "approver_group", "review_group"
    )
    return threshold_rule_lines(list(rule_records), list(band_records))
