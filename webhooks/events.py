"""The event types a webhook subscription picks, with stable names, and the payload each delivery carries.

Every fact is already an audit event (audit.services.audit_record), so a webhook is an audit event told to a receiver:
its verb names the type (`approved` → `proposal.approved`). Names are part of the public contract: never renamed,
only added. A verb missing here (a read, a webhook's own replay) is never sent: reads are the bulk of the trail and say
nothing a receiver acts on; a replay sending a webhook could feed on itself.

The payload follows the Standard Webhooks shape, {"type", "timestamp", "data"}. `data` is what a SIEM or a chat channel
needs to tell what happened and where to look: the event's id and hash (so the receiver can check it against the
trail), who acted, the agent, system, resource, record, proposal, the one-line summary and links to the admin. Never
the event's input, decision or state before/after: those hold the records' values (names, e-mail addresses, notes,
amounts), personal data that stays behind Gatehouse's own access checks; the link leads there. Never a secret: the
trail holds none.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC
from typing import Any

from django.conf import settings
from django.urls import NoReverseMatch, reverse

from audit.choices import Verb
from audit.models import AuditEvent

PROPOSAL_VERBS = (
    Verb.PROPOSED,
    Verb.AUTO_APPROVED,
    Verb.APPROVED,
    Verb.REJECTED,
    Verb.CANCELLED,
    Verb.ESCALATED,
    Verb.EXPIRED,
    Verb.EXECUTING,
    Verb.EXECUTED,
    Verb.FAILED,
    Verb.REVIEWED,
    Verb.FLAGGED,
    Verb.REVERSED,
    Verb.HELD,
    Verb.RELEASED,
    Verb.STALE,
    Verb.REFRESHED,
    Verb.REASSIGNED,
)

EVENT_TYPES: dict[str, str] = {
    **{str(verb): f"proposal.{verb}" for verb in PROPOSAL_VERBS},
    Verb.KILL_SWITCH_ON: "kill_switch.on",
    Verb.KILL_SWITCH_OFF: "kill_switch.off",
    Verb.CONFIGURED: "configuration.changed",
    Verb.TOKEN_ISSUED: "configuration.token_issued",
    Verb.TOKEN_REVOKED: "configuration.token_revoked",
    Verb.CREDENTIAL_SET: "configuration.credential_set",
    Verb.CREDENTIAL_REENCRYPTED: "configuration.credential_reencrypted",
    Verb.RULE_SIGNED_OFF: "configuration.rule_signed_off",
    Verb.READINESS_OVERRIDDEN: "configuration.readiness_overridden",
    Verb.TOOLS_IMPORTED: "configuration.tools_imported",
    # A downstream MCP tool's definition changed on its server (its action paused), and a person approved the new one.
    Verb.TOOL_CHANGED: "configuration.tool_changed",
    Verb.TOOL_APPROVED: "configuration.tool_approved",
    Verb.DENIED: "access.denied",
    Verb.SIGNED_IN: "access.signed_in",
    Verb.REVERSAL_PLANNED: "reversal.planned",
    Verb.REVERSAL_STEP_FAILED: "reversal.step_failed",
    Verb.REVERSAL_HELD: "reversal.held",
    Verb.REVERSAL_FINISHED: "reversal.finished",
    Verb.DRILL: "drill.finished",
}
# Never sent, on purpose (see the module's docstring); a test checks every verb is in one of the two.
NOT_SENT = frozenset({Verb.READ, Verb.WEBHOOK_REPLAYED})

ALL = "*"
GROUPS = sorted({name.split(".", 1)[0] + ".*" for name in EVENT_TYPES.values()})
TYPES = sorted(EVENT_TYPES.values())


def event_type(verb: str) -> str | None:
    return EVENT_TYPES.get(verb)


def pattern_errors(patterns: Iterable[Any]) -> list[str]:
    """What is wrong with a subscription's list of event types: each a type, a group ("proposal.*") or "*"."""
    known = {ALL, *GROUPS, *TYPES}
    errors = [f"{pattern!r} is not an event type or group." for pattern in patterns if pattern not in known]
    if not errors and not list(patterns):
        errors.append("Pick at least one event type or group.")
    return errors


def matches(patterns: Iterable[str], type_name: str) -> bool:
    group = type_name.split(".", 1)[0] + ".*"
    return any(pattern in (ALL, group, type_name) for pattern in patterns)


def _link(name: str, *args: Any) -> str | None:
    try:
        return settings.BASE_URL.rstrip("/") + reverse(name, args=args)
    except NoReverseMatch:
        return None


def payload(event: AuditEvent, type_name: str) -> dict[str, Any]:
    """The body of a delivery: the Standard Webhooks envelope around what the event says (no state values)."""
    links = {"event": _link("admin:audit_auditevent_change", event.pk)}
    if event.proposal_id:
        links["proposal"] = _link("admin:approvals_proposal_change", event.proposal_id)
    if event.system is not None and event.record_id:
        links["timeline"] = _link("admin:audit_timeline", event.system.slug, event.record_id)
    return {
        "type": type_name,
        "timestamp": event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "event_id": event.pk,
            "verb": event.verb,
            "summary": event.summary,
            "outcome": event.outcome,
            "actor": {"type": event.actor_type, "name": event.actor},
            "agent": event.agent.slug if event.agent is not None else None,
            "system": event.system.slug if event.system is not None else None,
            "resource": event.resource or None,
            "record_id": event.record_id or None,
            "proposal_id": str(event.proposal_id) if event.proposal_id else None,
            "channel": event.channel,
            "request_id": event.request_id or None,
            "hash": event.hash,
            "links": {name: url for name, url in links.items() if url},
        },
    }
