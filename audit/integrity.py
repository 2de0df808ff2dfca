"""Verifying the hash chain: the first event that was edited, deleted, or put out of order."""

from __future__ import annotations

from dataclasses import dataclass

from audit.models import GENESIS_HASH, AuditEvent


@dataclass(frozen=True)
class ChainReport:
    checked: int
    ok: bool
    broken_at: int | None = None
    reason: str = ""


def verify_chain(*, chunk_size: int = 5000) -> ChainReport:
    """Walk every event in id order; stop at the first one whose content or link does not match.

    An edited event no longer matches its own hash; a deleted or reordered one breaks the link of the event after.
    """
    expected_prev = GENESIS_HASH
    checked = 0
    for event in AuditEvent.objects.chain_order().iterator(chunk_size=chunk_size):
        if event.prev_hash != expected_prev:
            return ChainReport(
                checked,
                False,
                event.pk,
                f"event {event.pk} does not follow the event before it: one was deleted, inserted or reordered",
            )
        if event.compute_hash() != event.hash:
            return ChainReport(checked, False, event.pk, f"event {event.pk} was changed after it was written")
        expected_prev = event.hash
        checked += 1
    return ChainReport(checked, True)
