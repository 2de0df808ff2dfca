"""Signed checkpoints of the chain's head, each linked to the one before it, with a copy of each in the log.

A checkpoint signs the chain's head (HMAC-SHA256, key outside the database), so a tail cut off the events is noticed.
Someone with database access cannot sign, but could delete: the newest checkpoints, and then rewrite the events after
the one that is left. Three things stand in the way:

- The link. A version 2 checkpoint's signature also covers the id and signature of the checkpoint it was signed after
  (`previous_id`, `previous_signature`), so one deleted from the middle or the start, altered, renumbered or put
  back in another order breaks a link that nobody without the key can mend. The ids themselves may have gaps: a
  PostgreSQL sequence skips values after a crash, a failover or a rolled-back insert, so a gap alone proves nothing;
  the signed link says which checkpoint came before.
- The verification rows. Each passing run of the job records the checkpoint it signed; a run that names a checkpoint
  that is gone, or passed but names none, means checkpoints were deleted (a careful intruder deletes those rows too).
- The log. Each checkpoint is also written as one line to the `gatehouse.audit.checkpoint` logger, after its commit,
  so the operator's log pipeline keeps a copy outside the database; `verify_audit --checkpoint-log` compares them
  (`audit.checkpoint_log`). Only this one also finds the newest checkpoints deleted by a careful intruder.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.db import connection, transaction

from audit.models import AuditCheckpoint, AuditVerification

# The log copies: one line a checkpoint, for the operator's log pipeline to keep.
COPY_LOGGER = "gatehouse.audit.checkpoint"
copy_logger = logging.getLogger(COPY_LOGGER)
if copy_logger.level == logging.NOTSET:
    # The copy is evidence, not chatter: written whatever GATEHOUSE_LOG_LEVEL says, unless LOGGING names this logger.
    copy_logger.setLevel(logging.INFO)

CURRENT_VERSION = 2
VERSIONS = (1, 2)
# Any constant (another than the chain's): the PostgreSQL advisory lock that makes checkpoints one at a time.
_CHECKPOINT_LOCK_KEY = 7_447_104_472


def _digest_key() -> bytes:
    return settings.GATEHOUSE_AUDIT_DIGEST_KEY.encode()


def checkpoint_signature(
    *,
    last_event_id: int,
    last_hash: str,
    event_count: int,
    version: int = CURRENT_VERSION,
    previous_id: int | None = None,
    previous_signature: str = "",
) -> str:
    """The HMAC of a checkpoint's content: version 1 the head alone, version 2 the head and the link before it."""
    if version == 1:
        message = f"gatehouse-audit-checkpoint:v1:{last_event_id}:{last_hash}:{event_count}"
    elif version == 2:
        link = f"{previous_id if previous_id is not None else ''}:{previous_signature}"
        message = f"gatehouse-audit-checkpoint:v2:{last_event_id}:{last_hash}:{event_count}:{link}"
    else:
        raise ValueError(f"no checkpoint version {version}")
    return hmac.new(_digest_key(), message.encode(), hashlib.sha256).hexdigest()


def checkpoint_is_genuine(checkpoint: AuditCheckpoint) -> bool:
    if checkpoint.version not in VERSIONS:
        return False  # a version nobody signs: altered
    expected = checkpoint_signature(
        last_event_id=checkpoint.last_event_id,
        last_hash=checkpoint.last_hash,
        event_count=checkpoint.event_count,
        version=checkpoint.version,
        previous_id=checkpoint.previous_id,
        previous_signature=checkpoint.previous_signature,
    )
    return hmac.compare_digest(expected, checkpoint.signature)


def checkpoint_sign(*, head_id: int, head_hash: str, event_count: int) -> AuditCheckpoint:
    """Sign a verified head, linked to the newest checkpoint; the newest itself when it already covers that head.

    One at a time (an advisory lock on PostgreSQL; SQLite's IMMEDIATE transactions already are): two runs of the job
    (a long full walk and a five-minute one) would otherwise both link to the same checkpoint. The log copy is
    written once the transaction commits, so the log never holds a checkpoint the database rolled back.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHECKPOINT_LOCK_KEY])
        latest = AuditCheckpoint.objects.order_by("-id").first()
        if latest is not None and latest.last_event_id >= head_id:
            return latest  # nothing appended since (or another run signed further meanwhile): the signed head stands
        previous_id, previous_signature = (latest.pk, latest.signature) if latest else (None, "")
        signature = checkpoint_signature(
            last_event_id=head_id,
            last_hash=head_hash,
            event_count=event_count,
            version=CURRENT_VERSION,
            previous_id=previous_id,
            previous_signature=previous_signature,
        )
        checkpoint = AuditCheckpoint.objects.create(
            last_event_id=head_id,
            last_hash=head_hash,
            event_count=event_count,
            version=CURRENT_VERSION,
            previous_id=previous_id,
            previous_signature=previous_signature,
            signature=signature,
        )
        transaction.on_commit(partial(log_copy, checkpoint))
    return checkpoint


def copy_fields(checkpoint: AuditCheckpoint) -> dict[str, int | str | None]:
    """What a log copy holds: everything the signature covers, the signature, and the id it has in the database."""
    return {
        "checkpoint_id": checkpoint.pk,
        "version": checkpoint.version,
        "last_event_id": checkpoint.last_event_id,
        "last_hash": checkpoint.last_hash,
        "event_count": checkpoint.event_count,
        "previous_id": checkpoint.previous_id,
        "previous_signature": checkpoint.previous_signature,
        "signature": checkpoint.signature,
    }


def copy_message(checkpoint: AuditCheckpoint) -> str:
    """One line of `key=value`, the same in plain and JSON logs (`audit.checkpoint_log` reads it back)."""
    fields = copy_fields(checkpoint)
    fields["id"] = fields.pop("checkpoint_id")
    order = ("id", "version", "last_event_id", "last_hash", "event_count", "previous_id", "previous_signature")
    pairs = [f"{key}={fields[key] if fields[key] not in (None, '') else '-'}" for key in order]
    return f"audit checkpoint {' '.join(pairs)} signature={checkpoint.signature}"


def log_copy(checkpoint: AuditCheckpoint) -> None:
    # The same content twice: in the message for plain logs, as fields of their own for JSON logs and their queries.
    copy_logger.info(copy_message(checkpoint), extra=copy_fields(checkpoint))


@dataclass(frozen=True)
class CheckpointProblem:
    reason: str
    event_id: int | None = None  # the head of the checkpoint concerned, the event its signed statement was about


@dataclass(frozen=True)
class CheckpointsChecked:
    newest: AuditCheckpoint | None
    problem: CheckpointProblem | None = None


def verify_checkpoints(*, every: bool = True) -> CheckpointsChecked:
    """Every checkpoint genuine and linked to the one before it; passing runs of the job still find theirs.

    `every=False` (the five-minute job): only the newest checkpoint and its link to the one before, a query of two
    rows however long the trail; the whole chain of checkpoints and the verification rows are left to the full walk.
    """
    rows: Iterator[AuditCheckpoint]
    if every:
        rows, from_start = AuditCheckpoint.objects.order_by("id").iterator(chunk_size=2000), True
    else:
        newest_two = list(AuditCheckpoint.objects.order_by("-id")[:2])
        # The older of the two is checked for its signature only: its own link is the full walk's.
        rows, from_start = iter(reversed(newest_two)), len(newest_two) < 2
    before: AuditCheckpoint | None = None
    newest = None
    for checkpoint in rows:
        problem = _checkpoint_problem(checkpoint, before, from_start=from_start)
        if problem is not None:
            return CheckpointsChecked(checkpoint, problem)
        before = newest = checkpoint
        from_start = False
    problem = _verifications_problem() if every else None
    return CheckpointsChecked(newest, problem)


def _checkpoint_problem(
    checkpoint: AuditCheckpoint, before: AuditCheckpoint | None, *, from_start: bool
) -> CheckpointProblem | None:
    """`before`: the checkpoint with the next lower id (None when there is none, or it was not read)."""
    number, head = checkpoint.pk, checkpoint.last_event_id
    if not checkpoint_is_genuine(checkpoint):
        return CheckpointProblem(
            f"checkpoint {number} does not carry Gatehouse's signature: it was forged or altered, or "
            "GATEHOUSE_AUDIT_DIGEST_KEY changed since it was written",
            head,
        )
    if checkpoint.version < 2:
        return None  # signed alone: it names no checkpoint before it
    previous = checkpoint.previous_id
    if previous is None:
        if before is None:
            return None
        return CheckpointProblem(
            f"checkpoint {number} was signed as the first checkpoint, yet checkpoint {before.pk} comes before it: "
            "checkpoints were renumbered or put back",
            head,
        )
    if before is None and not from_start:
        return None  # the five-minute check found no row before it; the full walk will say why
    if before is None or before.pk != previous:
        now_before = f"the one before it now is checkpoint {before.pk}" if before else "no checkpoint is before it"
        return CheckpointProblem(
            f"checkpoint {number} was signed after checkpoint {previous}, which is gone ({now_before}): checkpoints "
            "were deleted, renumbered or put back; compare with the log copies (verify_audit --checkpoint-log)",
            head,
        )
    if not hmac.compare_digest(before.signature, checkpoint.previous_signature):
        return CheckpointProblem(
            f"checkpoint {previous} is not the checkpoint that checkpoint {number} was signed after: it was replaced",
            head,
        )
    return None


def _verifications_problem() -> CheckpointProblem | None:
    """A passing run of the job always records the checkpoint it signed (or found); the foreign key keeps it there."""
    verifications = AuditVerification.objects.order_by("id")
    dangling = (
        verifications.filter(checkpoint__isnull=False)
        .exclude(checkpoint_id__in=AuditCheckpoint.objects.values("id"))
        .values_list("id", "checkpoint_id")
        .first()
    )
    if dangling is not None:
        return CheckpointProblem(
            f"checkpoint {dangling[1]} is gone, yet verification {dangling[0]} recorded it: checkpoints were deleted; "
            "compare with the log copies (verify_audit --checkpoint-log)"
        )
    unlinked = verifications.filter(ok=True, checked__gt=0, checkpoint__isnull=True).values_list("id", flat=True)
    orphan = unlinked.first()
    if orphan is not None:
        return CheckpointProblem(
            f"verification {orphan} passed and signed a checkpoint, which is gone: checkpoints were deleted; compare "
            "with the log copies (verify_audit --checkpoint-log)"
        )
    return None
