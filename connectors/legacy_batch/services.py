"""State changes of batch systems: files taken from a drop folder into the event queue, each once, audited.

Kept beside the connector rather than in connectors/services.py: everything here is about one connector kind.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.base import PermanentError
from connectors.choices import BatchFileStatus
from connectors.legacy_batch.connector import (
    DUPLICATES,
    PROCESSED,
    REJECTED,
    BadRow,
    LegacyBatchConnector,
    ParsedFile,
    Row,
    parse_batch,
)
from connectors.models import BatchFile, BatchPoll, Event, QuarantinedRow
from governance.choices import ConnectorKind, WriteMode
from governance.models import Resource, System

logger = logging.getLogger(__name__)


@dataclass
class BatchFileOutcome:
    """What one poll did with one file."""

    name: str
    status: str  # a BatchFileStatus, or "skipped" when another poller took the file first
    events: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reason: str = ""
    moved_to: str = ""


@dataclass
class BatchPollReport:
    """One poll of one system: its files, or why it did not run (another poller holds it, or an error)."""

    system: str
    files: list[BatchFileOutcome] = field(default_factory=list)
    busy: bool = False
    error: str = ""
    unsettled: int = 0  # files still being written (changed within settle_seconds), left for a later poll

    def summary(self) -> str:
        if self.busy:
            return f"{self.system}: being polled elsewhere; skipped."
        if self.error:
            return f"{self.system}: not polled: {self.error}"
        if not self.files:
            text = f"{self.system}: no new files"
        else:
            parts = []
            for status in (BatchFileStatus.PROCESSED, BatchFileStatus.REJECTED, BatchFileStatus.DUPLICATE, "skipped"):
                count = sum(1 for outcome in self.files if outcome.status == status)
                if count:
                    parts.append(f"{count} {status}")
            text = (
                f"{self.system}: {len(self.files)} file(s) ({', '.join(parts)}); "
                f"{sum(o.events for o in self.files)} new event(s), {sum(o.duplicates for o in self.files)} "
                f"duplicate row(s), {sum(o.quarantined for o in self.files)} row(s) quarantined"
            )
        if self.unsettled:
            text += f"; {self.unsettled} file(s) still being written"
        return text + "."


def _batch_lease() -> timedelta:
    # Longer than any one task may run, so a live poller never loses its claim; renewed before each file.
    return timedelta(seconds=max(2 * settings.CELERY_TASK_TIME_LIMIT, 300))


def _batch_every(system) -> int:
    every = (system.connector_config or {}).get("every", 60) if isinstance(system.connector_config, dict) else 60
    return every if isinstance(every, int) and not isinstance(every, bool) and every > 0 else 60


def _batch_claim(*, system, token: str, only_if_due: bool) -> bool:
    """Claim the system for this poller with one conditional UPDATE (atomic on PostgreSQL and SQLite alike)."""
    BatchPoll.objects.get_or_create(system=system)
    now = timezone.now()
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    if only_if_due:
        free &= Q(last_polled_at__isnull=True) | Q(last_polled_at__lte=now - timedelta(seconds=_batch_every(system)))
    claimed = BatchPoll.objects.filter(free, system=system).update(
        claimed_by=token, claimed_until=now + _batch_lease(), last_polled_at=now
    )
    return claimed == 1


def _batch_renew(*, system, token: str) -> bool:
    """Extend this poller's claim before the next file; False when it was lost (the lease ran out, another took it)."""
    renewed = BatchPoll.objects.filter(system=system, claimed_by=token).update(
        claimed_until=timezone.now() + _batch_lease()
    )
    return renewed == 1


def batch_systems_due() -> list[int]:
    """Ids of batch systems whose own interval (`every`) has passed since their last poll. Disabled ones never are."""
    now = timezone.now()
    systems = (
        System.objects.filter(connector_kind=ConnectorKind.LEGACY_BATCH)
        .exclude(write_mode=WriteMode.DISABLED)
        .select_related("batch_poll")
    )
    due = []
    for system in systems:
        state = getattr(system, "batch_poll", None)
        last = state.last_polled_at if state is not None else None
        if last is None or last <= now - timedelta(seconds=_batch_every(system)):
            due.append(system.pk)
    return due


def batch_poll(*, system, channel: Channel | str, only_if_due: bool = False) -> BatchPollReport:
    """Take the files waiting in a batch system's drop folder, oldest first, each in a transaction of its own.

    Guarantees: a file's events, its quarantined rows, its BatchFile row and its audit event commit together, and
    the file is moved (to processed/, rejected/ or duplicates/) only after that commit. The same content is
    processed once per system (a unique index on the hash), a record version is one event (a unique key), and a
    row that cannot be an event is quarantined with its reason. One poller at a time per system (a lease on
    BatchPoll); should two ever overlap, the unique indexes make the later one roll back and leave the file.
    Call it outside a transaction: the moves wait for the commit.
    """
    report = BatchPollReport(system=system.slug)
    if system.connector_kind != ConnectorKind.LEGACY_BATCH:
        report.error = f"{system} is not a legacy batch system."
        return report
    token = uuid.uuid4().hex
    if not _batch_claim(system=system, token=token, only_if_due=only_if_due):
        report.busy = (
            not only_if_due or BatchPoll.objects.filter(system=system, claimed_until__gte=timezone.now()).exists()
        )
        return report
    try:
        # Built directly, not through the registry: a local folder needs no credential, and the rate limit and
        # circuit breaker the registry wraps around connectors are for calls to remote systems.
        connector = LegacyBatchConnector(system, None)
        resource = system.resources.filter(name=connector.config.resource).first()
        if resource is None:
            raise PermanentError(f'{system} has no resource "{connector.config.resource}" to record events under.')
        waiting = connector.waiting()
        report.unsettled = waiting.unsettled
        for path in waiting.files:
            if not _batch_renew(system=system, token=token):
                break  # the lease ran out and another poller holds the system now
            report.files.append(_batch_file_take(connector=connector, resource=resource, path=path, channel=channel))
    except (PermanentError, OSError) as exc:
        report.error = str(exc)
        logger.warning("Polling %s failed: %s", system, exc)
    finally:
        BatchPoll.objects.filter(system=system, claimed_by=token).update(
            claimed_by="", claimed_until=None, last_error=report.error[:500]
        )
    return report


def _batch_file_take(*, connector, resource, path: Path, channel: Channel | str) -> BatchFileOutcome:
    try:
        before = path.stat()
        content = path.read_bytes()
    except FileNotFoundError:
        return BatchFileOutcome(path.name, "skipped", reason="gone before it was read (taken by another poller)")
    sha256 = hashlib.sha256(content).hexdigest()
    try:
        with transaction.atomic():
            outcome, batch_file, subfolder = _batch_file_record(
                connector=connector, resource=resource, path=path, content=content, sha256=sha256, channel=channel
            )
            if batch_file is not None:
                transaction.on_commit(
                    lambda: _batch_file_move(connector, path, before, batch_file, subfolder, outcome), robust=True
                )
    except IntegrityError:
        # Only when two pollers overlapped (a lease ran out): the other one recorded this content or these events
        # first. Nothing of this attempt remains; the file stays for the other poller to move.
        return BatchFileOutcome(path.name, "skipped", reason="recorded by another poller at the same moment")
    return outcome


def _batch_file_record(
    *,
    connector: LegacyBatchConnector,
    resource: Resource,
    path: Path,
    content: bytes,
    sha256: str,
    channel: Channel | str,
) -> tuple[BatchFileOutcome, BatchFile | None, str]:
    """The database side of one file, inside its transaction: (outcome, BatchFile to move or None, subfolder)."""
    system, name = connector.system, path.name
    original = BatchFile.objects.filter(system=system, sha256=sha256, status=BatchFileStatus.PROCESSED).first()
    if original is not None:
        return _batch_file_seen_before(
            original=original, system=system, resource=resource, path=path, content=content, channel=channel
        )
    parsed = parse_batch(connector.config, content)
    if parsed.rejected:
        batch_file = _batch_file_create(
            system, name, content, sha256, status=BatchFileStatus.REJECTED, reason=parsed.rejected[:500]
        )
        _batch_file_audit(batch_file, resource, channel, f"set aside whole: {parsed.rejected}")
        return BatchFileOutcome(name, batch_file.status, reason=batch_file.reason), batch_file, REJECTED
    return _batch_file_events(
        system=system, resource=resource, name=name, content=content, sha256=sha256, parsed=parsed, channel=channel
    )


def _batch_file_seen_before(
    *, original: BatchFile, system: System, resource: Resource, path: Path, content: bytes, channel: Channel | str
) -> tuple[BatchFileOutcome, BatchFile | None, str]:
    """A file whose content was processed before: taken by another poller, left unmoved, or a copy arriving again."""
    name = path.name
    if not path.exists():
        # Read while another poller was recording it, and moved by that poller since: not a second arrival.
        return BatchFileOutcome(name, "skipped", reason="taken by another poller at the same moment"), None, ""
    if original.name == name and not original.moved_to:
        # Recorded, but the move after the commit never happened (the poller died): only the move is left to do.
        return (
            BatchFileOutcome(name, BatchFileStatus.PROCESSED, reason="recorded earlier; moved now"),
            original,
            PROCESSED,
        )
    batch_file = _batch_file_create(
        system,
        name,
        content,
        original.sha256,
        status=BatchFileStatus.DUPLICATE,
        duplicate_of=original,
        reason=f"Same content as {original.name} (file #{original.pk}), already processed: no new events.",
    )
    _batch_file_audit(batch_file, resource, channel, f"is a copy of {original.name} (#{original.pk}); no events")
    return BatchFileOutcome(name, batch_file.status, reason=batch_file.reason), batch_file, DUPLICATES


def _batch_file_create(system: System, name: str, content: bytes, sha256: str, **fields: Any) -> BatchFile:
    """The file's row, with what became of it in `fields` (status, reason, counts)."""
    return BatchFile.objects.create(system=system, name=name, sha256=sha256, size=len(content), **fields)


def _batch_rows_sort(system: System, parsed: ParsedFile) -> tuple[list[Row], list[BadRow], int]:
    """The file's rows as (new events, rows to quarantine in line order, the number of duplicate rows).

    One event per (record, version): a repeat with the same values is a duplicate row; with other values it is
    quarantined, since the first one already stands and must not silently change.
    """
    keys = [row.key for row in parsed.rows]
    known: dict[str, tuple[dict, str]] = {}
    for start in range(0, len(keys), 500):
        for key, data, source in Event.objects.filter(system=system, key__in=keys[start : start + 500]).values_list(
            "key", "data", "source"
        ):
            known[key] = (data, f"the event from {source}")
    fresh, bad, duplicates = [], list(parsed.bad), 0
    for row in parsed.rows:
        prior = known.get(row.key)
        if prior is None:
            known[row.key] = (row.data, f"line {row.line} of this file")
            fresh.append(row)
        elif prior[0] == row.data:
            duplicates += 1
        else:
            bad.append(
                BadRow(
                    row.line,
                    row.raw,
                    f"conflicts with {prior[1]}: same record {row.record_id} and version {row.version}, other values",
                )
            )
    bad.sort(key=lambda row: row.line)
    return fresh, bad, duplicates


def _batch_file_events(
    *,
    system: System,
    resource: Resource,
    name: str,
    content: bytes,
    sha256: str,
    parsed: ParsedFile,
    channel: Channel | str,
) -> tuple[BatchFileOutcome, BatchFile, str]:
    """A processed file: its new events, its quarantined rows, its BatchFile row and its audit event."""
    fresh, bad, duplicates = _batch_rows_sort(system, parsed)
    batch_file = _batch_file_create(
        system,
        name,
        content,
        sha256,
        status=BatchFileStatus.PROCESSED,
        rows_read=len(parsed.rows) + len(parsed.bad),
        events_created=len(fresh),
        rows_duplicate=duplicates,
        rows_quarantined=len(bad),
    )
    Event.objects.bulk_create(
        [
            Event(
                system=system,
                resource=resource,
                key=row.key,
                record_id=row.record_id,
                data=row.data,
                source=f"{name}:{row.line}"[-300:],
            )
            for row in fresh
        ],
        batch_size=500,
    )
    QuarantinedRow.objects.bulk_create(
        [QuarantinedRow(file=batch_file, line=row.line, raw=row.raw, reason=row.reason[:500]) for row in bad],
        batch_size=500,
    )
    tally = f"{len(fresh)} new event(s), {duplicates} duplicate row(s), {len(bad)} row(s) quarantined"
    if bad:
        tally += f" (first: line {bad[0].line}, {bad[0].reason})"
    _batch_file_audit(batch_file, resource, channel, f"processed: {tally}")
    outcome = BatchFileOutcome(name, batch_file.status, events=len(fresh), duplicates=duplicates, quarantined=len(bad))
    return outcome, batch_file, PROCESSED


def _batch_file_audit(batch_file: BatchFile, resource, channel: Channel | str, what: str) -> None:
    audit_record(
        verb=Verb.READ,
        channel=channel,
        system=batch_file.system,
        resource=resource.name,
        input={
            "file": batch_file.name,
            "batch_file": batch_file.pk,
            "sha256": batch_file.sha256,
            "size": batch_file.size,
            "rows": batch_file.rows_read,
            "events": batch_file.events_created,
            "duplicates": batch_file.rows_duplicate,
            "quarantined": batch_file.rows_quarantined,
        },
        outcome=batch_file.status,
        summary=f"{batch_file.system}: batch file {batch_file.name} {what}.",
    )


def _batch_file_move(connector, path: Path, before, batch_file: BatchFile, subfolder: str, outcome) -> None:
    """After the commit: move the file aside, unless it changed while it was read (then its new content is taken,
    under a new hash, at the next poll; rows already recorded count as duplicates then)."""
    try:
        now = path.stat()
        if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            outcome.reason = "changed while it was read: left in place for the next poll"
            return
        target = connector.move_aside(path, subfolder, f"{batch_file.pk}-{path.name}")
    except OSError as exc:
        outcome.reason = f"recorded, but not moved: {exc}"
        logger.warning("Batch file %s recorded but not moved: %s", path, exc)
        return
    BatchFile.objects.filter(pk=batch_file.pk).update(moved_to=target)  # not history-tracked
    outcome.moved_to = target
