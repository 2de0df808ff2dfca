"""One way to write a moment and a day on the auditor's pages: `2026-12-02 14:05:09 UTC` and `2026-12-02`.

Year first (sorts as text, reads the same in every country), to the second (two events a minute apart are told
apart), and the time zone named (the one Gatehouse runs in, `GATEHOUSE_TIME_ZONE`, UTC unless set). The exports keep
their own ISO 8601 UTC text with microseconds, for machines.
"""

from __future__ import annotations

from datetime import date, datetime

from django.utils import timezone

MOMENT_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
DAY_FORMAT = "%Y-%m-%d"
CLOCK_FORMAT = "%H:%M:%S"


def moment(value: datetime | None) -> str:
    """`2026-12-02 14:05:09 UTC`: an aware time in the current time zone; "" for None."""
    if value is None:
        return ""
    return timezone.localtime(value).strftime(MOMENT_FORMAT)


def day_text(value: date | datetime | None) -> str:
    """`2026-12-02`: a day, or the local day of a moment; "" for None."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = timezone.localtime(value)
    return value.strftime(DAY_FORMAT)


def clock(value: datetime, *, on: date | None = None) -> str:
    """`14:05:09` when the moment falls on the day `on` (the day a line already shows), else the whole moment."""
    local = timezone.localtime(value)
    if on is not None and local.date() == on:
        return local.strftime(CLOCK_FORMAT)
    return moment(value)
