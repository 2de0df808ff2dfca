"""Links into the audit trail, for every page that points an auditor at what happened."""

from __future__ import annotations

from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent


def timeline_url(event: AuditEvent, *, with_day: bool = True) -> str | None:
    """The record timeline of the event's record, on the event's day; None when the event has no record."""
    system = event.system
    if system is None or not event.record_id:
        return None
    url = reverse("admin:audit_timeline", args=[system.slug, event.record_id])
    if with_day:
        url += f"?day={timezone.localtime(event.occurred_at).date().isoformat()}"
    return url


def audit_trail_url(**filters: object) -> str:
    """The audit changelist filtered, e.g. `audit_trail_url(system__id__exact=3)`: for links from other pages."""
    return reverse("admin:audit_auditevent_changelist") + "?" + urlencode(filters)


def subject_timeline_url(event: AuditEvent) -> str | None:
    """For an event about an agent or a system itself (a configuration change, a token, a switch): the agent's
    timeline, else the system's own."""
    if event.agent_id is not None and event.agent is not None:
        return reverse("admin:audit_agent_timeline", args=[event.agent.slug])
    if event.system_id is not None and event.system is not None:
        return reverse("admin:audit_system_timeline", args=[event.system.slug])
    return None
