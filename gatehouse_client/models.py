"""What the agent API answers, as dataclasses: built from JSON, tolerant of fields added later (CONTRACT.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

# The proposal statuses of CONTRACT.md, in the named sets `wait_for_decision` reasons with.
AWAITING_DECISION = frozenset({"pending_approval", "escalated"})  # a person has yet to decide
IN_PROGRESS = frozenset({"approved", "executing"})  # decided yes; Gatehouse is carrying it out
FINAL = frozenset({"executed", "failed", "rejected", "cancelled", "expired", "reversed"})  # nothing more will happen
WITH_A_PERSON = frozenset({"manual_task", "on_hold"})  # approved but a person carries it out, or held by a kill switch


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _amount(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


@dataclass(frozen=True)
class Grant:
    """One of the agent's scope grants: `read` (of `fields`) or `write` (of `actions`) on a system's resource."""

    system: str
    resource: str
    access: str
    fields: list[str]
    actions: list[str]
    expires_at: datetime | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Grant:
        return cls(
            system=data["system"],
            resource=data["resource"],
            access=data["access"],
            fields=list(data.get("fields") or []),
            actions=list(data.get("actions") or []),
            expires_at=_when(data.get("expires_at")),
        )


@dataclass(frozen=True)
class Me:
    """The calling agent (`GET /api/v1/me`)."""

    slug: str
    name: str
    status: str
    grants: list[Grant]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Me:
        return cls(
            slug=data["slug"],
            name=data.get("name", ""),
            status=data.get("status", ""),
            grants=[Grant.from_json(grant) for grant in data.get("grants", [])],
        )


@dataclass(frozen=True)
class Record:
    """One record read through Gatehouse; `data` holds only the fields the agent's grants allow."""

    system: str
    resource: str
    record_id: str
    data: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        return cls(
            system=data["system"], resource=data["resource"], record_id=data["record_id"], data=dict(data["data"])
        )


@dataclass(frozen=True)
class Impact:
    """What Gatehouse computed the proposal is worth (for a credit limit: new limit minus current)."""

    amount: Decimal | None
    currency: str


@dataclass(frozen=True)
class Decision:
    """How the signed-off rules decided: `mode` is `auto`, `single` or `dual`; who approves and by when."""

    mode: str
    reason: str
    rule: str | None
    band: str | None
    approver: str | None
    approver_group: str | None
    review_group: str | None
    sla_due_at: datetime | None
    expires_at: datetime | None


@dataclass(frozen=True)
class Proposal:
    """A proposal as Gatehouse last reported it. `replayed` is true when an Idempotency-Key replay answered."""

    id: str
    status: str
    system: str
    action: str
    record_id: str
    payload: dict[str, Any]
    reason: str
    impact: Impact
    decision: Decision
    rejection_reason: str | None
    failure_reason: str | None
    created_at: datetime | None
    decided_at: datetime | None
    executed_at: datetime | None
    replayed: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def awaiting_decision(self) -> bool:
        """A person has yet to approve or reject it."""
        return self.status in AWAITING_DECISION

    @property
    def settled(self) -> bool:
        """Neither waiting for a decision nor being executed: what `wait_for_decision` waits for."""
        return self.status not in AWAITING_DECISION | IN_PROGRESS

    @classmethod
    def from_json(cls, data: dict[str, Any], *, replayed: bool = False) -> Proposal:
        impact = data.get("impact") or {}
        decision = data.get("decision") or {}
        return cls(
            id=str(data["id"]),
            status=data["status"],
            system=data.get("system", ""),
            action=data.get("action", ""),
            record_id=data.get("record_id", ""),
            payload=dict(data.get("payload") or {}),
            reason=data.get("reason") or "",
            impact=Impact(amount=_amount(impact.get("amount")), currency=impact.get("currency", "")),
            decision=Decision(
                mode=decision.get("mode", ""),
                reason=decision.get("reason", ""),
                rule=decision.get("rule"),
                band=decision.get("band"),
                approver=decision.get("approver"),
                approver_group=decision.get("approver_group"),
                review_group=decision.get("review_group"),
                sla_due_at=_when(decision.get("sla_due_at")),
                expires_at=_when(decision.get("expires_at")),
            ),
            rejection_reason=data.get("rejection_reason"),
            failure_reason=data.get("failure_reason"),
            created_at=_when(data.get("created_at")),
            decided_at=_when(data.get("decided_at")),
            executed_at=_when(data.get("executed_at")),
            replayed=replayed,
            raw=data,
        )


@dataclass(frozen=True)
class Event:
    """One event of an event-queue (legacy batch) system, e.g. a row of a nightly export."""

    id: int
    system: str
    resource: str
    record_id: str
    data: dict[str, Any]
    received_at: datetime | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(
            id=int(data["id"]),
            system=data["system"],
            resource=data["resource"],
            record_id=data["record_id"],
            data=dict(data["data"]),
            received_at=_when(data.get("received_at")),
        )


@dataclass(frozen=True)
class Page:
    """One page of events; pass `next_after` as `after` to read on (it stays put when the page is empty)."""

    events: list[Event]
    next_after: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Page:
        return cls(events=[Event.from_json(event) for event in data["events"]], next_after=int(data["next_after"]))
