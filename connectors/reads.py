"""Agents' reads through the connectors: one record of a system, and the events batch systems delivered.

The gate checks each read first (governance.gate: kill switch, then scope); only granted fields leave Gatehouse, and
the audit event names the fields returned, never their values.
"""

from __future__ import annotations

from typing import Any

from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.base import PermanentError, RecordNotFound, TransientError
from connectors.limits import retry_after_header
from connectors.models import Event
from connectors.registry import connector_for
from core.errors import NotFound, SystemUnavailable
from governance.gate import check_events, check_read
from governance.models import Agent


def record_read(
    *, agent: Agent, system_slug: str, resource_name: str, record_id: str, channel: Channel | str
) -> dict[str, Any]:
    """Read one record through the system's connector; only granted fields leave Gatehouse.

    A system whose circuit breaker is open, or whose rate limit stays reached past a short wait, is not called: 503
    system_unavailable with its Retry-After.
    """
    scope = check_read(
        agent, system_slug=system_slug, resource_name=resource_name, record_id=record_id, channel=channel
    )
    system, resource, fields = scope.system, scope.resource, scope.fields
    common: dict[str, Any] = {
        "actor": agent,
        "channel": channel,
        "system": system,
        "resource": resource.name,
        "record_id": record_id,
    }
    try:
        data = connector_for(system, agent=agent).read(resource.name, record_id, fields)
    except RecordNotFound:
        audit_record(
            verb=Verb.READ,
            outcome="not_found",
            summary=f"{agent.slug} looked for {resource.label} {record_id}: none.",
            **common,
        )
        raise NotFound(f"No {resource.label} {record_id} in {system}.") from None
    except (TransientError, PermanentError) as exc:
        audit_record(
            verb=Verb.READ,
            outcome="system_unavailable",
            summary=f"{agent.slug} could not read {record_id}: {exc}",
            **common,
        )
        raise SystemUnavailable(
            f"{system} could not be read: {exc}", headers={"Retry-After": retry_after_header(exc)}
        ) from exc
    audit_record(
        verb=Verb.READ,
        input={"fields": fields},
        summary=f"{agent.slug} read {resource.label} {record_id} ({', '.join(fields)}).",
        **common,
    )
    return {"system": system.slug, "resource": resource.name, "record_id": record_id, "data": data}


def events_list(
    *, agent: Agent, system_slug: str | None, after: int, limit: int, channel: Channel | str
) -> list[dict[str, Any]]:
    """Events from event-queue systems the agent holds a read grant on, oldest first after the cursor `after`.

    Only granted fields of each event's data are returned; the audit event counts the events and names the fields.
    """
    scope = check_events(agent, system_slug=system_slug, channel=channel)
    system, fields_by_resource = scope.system, scope.fields_by_resource
    events = list(
        Event.objects.filter(resource_id__in=fields_by_resource, pk__gt=after)
        .select_related("system", "resource")
        .order_by("pk")[:limit]
    )
    result = [
        {
            "id": event.pk,
            "system": event.system.slug,
            "resource": event.resource.name,
            "record_id": event.record_id,
            "data": {
                name: event.data.get(name) for name in fields_by_resource[event.resource_id] if name in event.data
            },
            "received_at": event.received_at,
        }
        for event in events
    ]
    audit_record(
        verb=Verb.READ,
        actor=agent,
        channel=channel,
        system=system,
        resource="events",
        input={
            "after": after,
            "count": len(result),
            "fields": sorted({f for v in fields_by_resource.values() for f in v}),
        },
        summary=f"{agent.slug} read {len(result)} event(s)" + (f" of {system}" if system else "") + f" after #{after}.",
    )
    return result
