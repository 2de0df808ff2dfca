"""Rooms above the trail that want to be told of each new event, in the event's own transaction, without the trail
importing them (the rooms are stacked: audit imports only core).

An app registers a follower when Django starts (webhooks/apps.py), as connectors register their checks with the
inventory (governance/connections.py). `audit_record` asks each follower whether it `wants` the event's verb, which
must answer from memory (no query: appending an event is on every hot path); only a follower that says yes is then
handed the event, inside the transaction that writes it, so what it writes commits or rolls back with the event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from audit.models import AuditEvent


class Follower(Protocol):
    def wants(self, verb: str) -> bool:
        """Whether `follow` has anything to do for an event of this verb; answered without a query."""

    def follow(self, event: AuditEvent) -> None:
        """The event was just appended (it has its id and hash); runs in the event's transaction."""


_followers: list[Follower] = []


def register(follower: Follower) -> None:
    """Add a follower once (a second registration of the same object is ignored: apps.ready() may run twice)."""
    if follower not in _followers:
        _followers.append(follower)


def interested(verb: str) -> list[Follower]:
    return [follower for follower in _followers if follower.wants(verb)]
