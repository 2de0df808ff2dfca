"""Verifying the hash chain: the first event that was edited, deleted, put out of order, or cut off the end.

The chain finds edits, deletions and reorderings by itself. A tail cut off the end leaves a shorter chain that still
holds, so Gatehouse also signs the chain's head on a schedule (`AuditCheckpoint`, HMAC-SHA256 with a key kept
outside the database) and each check compares the chain with the newest checkpoint, after checking that the
checkpoints themselves hold (`audit.checkpoints`: each signed, each linked to the one before, none missing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from audit.checkpoints import checkpoint_sign, verify_checkpoints
from audit.models import GENESIS_HASH, AuditCheckpoint, AuditEvent, AuditVerification

logger = logging.getLogger(__name__)

# The periodic job walks only what was appended since the last checkpoint, and the whole chain this often.
FULL_WALK_EVERY = timedelta(hours=24)
# A full walk of millions of events takes minutes: the job's own time limit, far above the default task limits.
FULL_WALK_TIME_LIMIT = timedelta(minutes=30)
# What a run writes when it ends, into the row it wrote when it started (the rest of the row stays as it began).
RESULT_FIELDS = ("finished_at", "ok", "checked", "broken_at", "reason", "checkpoint")
# A progress callback hears the count of events checked this often (a call per event would slow the walk).
PROGRESS_EVERY = 1000


@dataclass(frozen=True)
class ChainReport:
    checked: int
    ok: bool
    broken_at: int | None = None
    reason: str = ""
    head_id: int | None = None  # the last event walked while the chain still held
    head_hash: str = ""


def verify_chain(
    *, chunk_size: int = 5000, since_checkpoint: bool = False, progress: Callable[[int], None] | None = None
) -> ChainReport:
    """Walk every event in id order; stop at the first one whose content or link does not match.

    First the checkpoints: every one genuine and linked to the one before it, and every passing run of the job still
    finding the checkpoint it signed (`verify_checkpoints`); else one was altered, forged or deleted. Then the events:
    an edited event no longer matches its own hash; a deleted or reordered one breaks the link of the event after.
    Then the newest signed checkpoint must still match: its head event present with the same hash, and exactly as
    many events up to it as there were when it was signed; otherwise the end of the chain was deleted (or rewritten).

    `since_checkpoint`: check the newest checkpoint (genuine, linked to the one before) and its head (present,
    unchanged, the same number of events up to it) and walk only the events after it. Cheap enough to run every few
    minutes at millions of events; an edit in the middle of the older part is left to the next full walk.

    `progress(checked)` is called every PROGRESS_EVERY events, for a command's progress bar.
    """
    checked = verify_checkpoints(every=not since_checkpoint)
    if checked.problem is not None:
        return ChainReport(0, False, checked.problem.event_id, checked.problem.reason)
    checkpoint = checked.newest
    walk = _Walk(checkpoint)
    events = AuditEvent.objects.chain_order()
    if since_checkpoint and checkpoint is not None:
        head = AuditEvent.objects.filter(pk=checkpoint.last_event_id).first()
        if head is not None:
            problem = _checkpoint_mismatch(checkpoint, head, events.filter(pk__lte=head.pk).count())
            if problem is None and head.compute_hash() != head.hash:
                problem = f"event {head.pk} was changed after it was written"
            if problem:
                return ChainReport(0, False, head.pk, problem)
            events = events.filter(pk__gt=head.pk)
            walk.resume_after(head, checked=checkpoint.event_count)
    for event in events.iterator(chunk_size=chunk_size):
        broken = walk.step(event)
        if broken is not None:
            return broken
        if progress is not None and walk.checked % PROGRESS_EVERY == 0:
            progress(walk.checked)
    return walk.finish()


@dataclass
class _Walk:
    """The chain walked so far: the hash the next event must name, how many held, the head, the checkpoint seen."""

    checkpoint: AuditCheckpoint | None
    expected_prev: str = GENESIS_HASH
    checked: int = 0
    head_id: int | None = None
    head_hash: str = ""
    seen_checkpoint_head: bool = False

    def resume_after(self, head: AuditEvent, *, checked: int) -> None:
        self.expected_prev, self.checked, self.head_id, self.head_hash = head.hash, checked, head.pk, head.hash
        self.seen_checkpoint_head = True

    def broken(self, event_id: int | None, reason: str) -> ChainReport:
        return ChainReport(self.checked, False, event_id, reason, self.head_id, self.head_hash)

    def step(self, event: AuditEvent) -> ChainReport | None:
        """Check one event (in id order); the report of the first break, or None while the chain holds."""
        if event.prev_hash != self.expected_prev:
            why = f"event {event.pk} does not follow the event before it: one was deleted, inserted or reordered"
            return self.broken(event.pk, why)
        if event.compute_hash() != event.hash:
            return self.broken(event.pk, f"event {event.pk} was changed after it was written")
        self.expected_prev = event.hash
        self.checked += 1
        self.head_id, self.head_hash = event.pk, event.hash
        checkpoint = self.checkpoint
        if checkpoint is not None and event.pk == checkpoint.last_event_id:
            self.seen_checkpoint_head = True
            problem = _checkpoint_mismatch(checkpoint, event, self.checked)
            if problem:
                return self.broken(event.pk, problem)
        return None

    def finish(self) -> ChainReport:
        """The end of the walk: the newest checkpoint's head must have been met (else the tail was cut off)."""
        checkpoint = self.checkpoint
        if checkpoint is not None and not self.seen_checkpoint_head:
            last = f"event {self.head_id}" if self.head_id is not None else "nothing"
            return self.broken(
                checkpoint.last_event_id,
                f"event {checkpoint.last_event_id} is missing: checkpoint {checkpoint.pk} signed a chain of "
                f"{checkpoint.event_count} event(s) ending at event {checkpoint.last_event_id}, and the chain now ends "
                f"at {last} with {self.checked}: the newest events were deleted (a truncated tail)",
            )
        return ChainReport(self.checked, True, head_id=self.head_id, head_hash=self.head_hash)


def _checkpoint_mismatch(checkpoint: AuditCheckpoint, head: AuditEvent, count_up_to_head: int) -> str | None:
    if head.hash == checkpoint.last_hash and count_up_to_head == checkpoint.event_count:
        return None
    return (
        f"event {head.pk} is not the chain head that checkpoint {checkpoint.pk} signed "
        f"({checkpoint.event_count} event(s) ending in hash {checkpoint.last_hash[:12]}…; now {count_up_to_head} "
        f"ending in {head.hash[:12]}…): the chain was rewritten up to it"
    )


def checkpoint_write(*, report: ChainReport) -> AuditCheckpoint | None:
    """Sign the head of a chain that was just verified. Nothing to sign for an empty or broken chain."""
    if not report.ok or report.head_id is None:
        return None
    return checkpoint_sign(head_id=report.head_id, head_hash=report.head_hash, event_count=report.checked)


def _full_walk_due() -> bool:
    """A full walk when none passed within FULL_WALK_EVERY and none is running (runs outlast the five-minute beat)."""
    now = timezone.now()
    if not AuditCheckpoint.objects.exists():
        return True
    full = AuditVerification.objects.filter(full=True)
    passed = full.filter(ok=True, finished_at__isnull=False, started_at__gte=now - FULL_WALK_EVERY)
    running = full.filter(finished_at__isnull=True, started_at__gte=now - FULL_WALK_TIME_LIMIT)
    return not passed.exists() and not running.exists()


def verify_and_checkpoint(
    *, full: bool | None = None, progress: Callable[[int], None] | None = None
) -> AuditVerification:
    """The periodic job: verify the chain, keep the result, and sign the head when the chain holds.

    `full=None` decides by itself: a full walk when none passed within `FULL_WALK_EVERY` (or there is no checkpoint
    yet); otherwise only the events appended since the newest checkpoint. The row is written when the run starts, so
    an unfinished run is visible, and a second full walk does not start while one is under way.
    """
    if full is None:
        full = _full_walk_due()
    verification = AuditVerification.objects.create(ok=False, full=full, reason="running")
    report = verify_chain(since_checkpoint=not full, progress=progress)
    with transaction.atomic():
        verification.checkpoint = checkpoint_write(report=report)
        verification.finished_at = timezone.now()
        verification.ok, verification.checked = report.ok, report.checked
        verification.broken_at, verification.reason = report.broken_at, report.reason
        # Only the result: the application's database role may update these columns and no others (grant_app_role).
        verification.save(update_fields=RESULT_FIELDS)
    if not report.ok:
        logger.error("audit chain broken: %s", report.reason)
    return verification
