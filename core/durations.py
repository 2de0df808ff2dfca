"""Durations as people write them: "4 hours", "1 day 12 hours", "30 minutes", shown and accepted in forms.

Django's own duration field shows four hours as "04:00:00" and three days as "3 00:00:00", which reads as nothing
to a business owner. Its format is still accepted here, so a form posted by a script or an older page keeps working.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_duration

_UNITS = [("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)]
# Every spelling of a unit a person may type, to its seconds.
_SPELLINGS = {
    **dict.fromkeys(["w", "wk", "wks", "week", "weeks"], 604800),
    **dict.fromkeys(["d", "day", "days"], 86400),
    **dict.fromkeys(["h", "hr", "hrs", "hour", "hours"], 3600),
    **dict.fromkeys(["m", "min", "mins", "minute", "minutes"], 60),
    **dict.fromkeys(["s", "sec", "secs", "second", "seconds"], 1),
}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
EXAMPLES = "“4 hours”, “30 minutes”, “1 day 12 hours” or “3 days”"


def duration_words(value: timedelta) -> str:
    """4 hours, 24 hours, 1 hour 30 minutes, 3 days, 2 days 6 hours; weeks only when whole ("2 weeks")."""
    total = int(value.total_seconds())
    if total == 0:
        return "0 seconds"
    sign, total = ("minus ", -total) if total < 0 else ("", total)
    parts = []
    for name, seconds in _UNITS:
        if name == "week" and total % seconds:
            continue  # "10 days", not "1 week 3 days"
        if name == "day" and total < 2 * seconds and total % 3600 == 0:
            continue  # "24 hours" and "36 hours", as SLAs and review windows are said
        count, total = divmod(total, seconds)
        if count:
            parts.append(f"{count} {name}" if count == 1 else f"{count} {name}s")
    return sign + " ".join(parts)


def parse_duration_words(text: str) -> timedelta:
    """ "4 hours", "4h", "1 day, 12 hours", "1.5 hours", "90 min"; or Django's "3 00:00:00" and "4:00:00".

    A bare number is refused rather than guessed: "4" could be seconds, hours or days.
    """
    cleaned = " ".join(text.lower().replace(",", " ").replace(" and ", " ").split())
    if not cleaned:
        raise ValidationError("Give a duration, e.g. " + EXAMPLES + ".")
    if ":" in cleaned:
        parsed = parse_duration(cleaned)
        if parsed is not None:
            return parsed
    parts = _PART.findall(cleaned)
    if not parts or _PART.sub("", cleaned).strip():
        if re.fullmatch(r"\d+(\.\d+)?", cleaned):
            raise ValidationError(f"Say the unit of “{text.strip()}”: e.g. {EXAMPLES}.")
        raise ValidationError(f"“{text.strip()}” is not a duration: write e.g. {EXAMPLES}.")
    seconds = 0.0
    for number, unit in parts:
        if unit not in _SPELLINGS:
            raise ValidationError(f"“{unit}” is not a unit of time: write e.g. {EXAMPLES}.")
        seconds += float(number) * _SPELLINGS[unit]
    return timedelta(seconds=round(seconds))


class DurationWordsField(forms.DurationField):
    """A duration field that shows "4 hours" and accepts it (and Django's "4:00:00")."""

    widget = forms.TextInput

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.widget.attrs.setdefault("size", "16")
        self.widget.attrs.setdefault("placeholder", "e.g. 4 hours")

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, timedelta):
            return duration_words(value)
        return value

    def to_python(self, value: Any) -> timedelta | None:
        if value in self.empty_values:
            return None
        if isinstance(value, timedelta):
            return value
        return parse_duration_words(str(value))
