"""The words and links the dashboard's panels share: lengths of time as on a clock, SLA clocks, admin URLs."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse


def span(seconds: float) -> str:
    """A length of time as people say it on a clock: "2 h 10 min", "15 min", "3 d 4 h", "less than a minute"."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "less than a minute"
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def sla_clock(due: datetime | None, now: datetime) -> tuple[str, bool]:
    """("due in 2 h 10 min", False) or ("overdue by 15 min", True); ("no SLA", False) without a due time."""
    if due is None:
        return "no SLA", False
    seconds = (due - now).total_seconds()
    if seconds >= 0:
        return f"due in {span(seconds)}", False
    return f"overdue by {span(-seconds)}", True


def admin_url(name: str, *args: Any, **query: Any) -> str:
    """The admin page `admin:<name>` (with `args`), filtered by `query` when there is one."""
    url = reverse(f"admin:{name}", args=args)
    return f"{url}?{urlencode(query)}" if query else url


def proposals_url(**query: Any) -> str:
    """The proposal changelist, filtered; `queue` defaults to "all" (the list's own default is the user's queue)."""
    return admin_url("approvals_proposal_changelist", **{"queue": "all", **query})
