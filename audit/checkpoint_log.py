"""Comparing the database's checkpoints with the copies the log kept: `verify_audit --checkpoint-log FILE`.

The log is the copy someone with database access cannot take back: a checkpoint in the log that the database lost
was deleted, one that differs was replaced. Reads the lines `audit.checkpoints.log_copy` writes, in plain or JSON-lines
logs as core/logs.py and the settings' LOGGING write them, also behind a prefix a log shipper adds (journald, docker),
and the lines of the release before the checkpoint chain (logger `audit.integrity`, "audit checkpoint 12: 345
event(s) up to #345 hash … signature …"). A checkpoint with no copy in the log is only counted: logs are rotated, and
nobody without the key can write a checkpoint the database would take.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from audit.checkpoints import COPY_LOGGER, checkpoint_is_genuine
from audit.models import AuditCheckpoint

_HEX = "[0-9a-f]{64}"
_COPY = re.compile(
    r"audit checkpoint id=(?P<checkpoint_id>\d+) version=(?P<version>\d+) last_event_id=(?P<last_event_id>\d+) "
    rf"last_hash=(?P<last_hash>{_HEX}) event_count=(?P<event_count>\d+) previous_id=(?P<previous_id>\d+|-) "
    rf"previous_signature=(?P<previous_signature>{_HEX}|-) signature=(?P<signature>{_HEX})\s*$"
)
_COPY_V1 = re.compile(
    r"audit checkpoint (?P<checkpoint_id>\d+): (?P<event_count>\d+) event\(s\) up to #(?P<last_event_id>\d+) "
    rf"hash (?P<last_hash>{_HEX}) signature (?P<signature>{_HEX})\s*$"
)
_LOGGERS = (COPY_LOGGER, "audit.integrity")
# A plain line: "<asctime> <level> <logger> <message>"; the logger's name stands right before the message.
_PLAIN = re.compile(rf"(?:^|\s)(?:{'|'.join(re.escape(name) for name in _LOGGERS)}) (?P<message>audit checkpoint .*)$")
# Compared with the database row; all of them are covered by the signature, but for the id.
_COMPARED = ("version", "last_event_id", "last_hash", "event_count", "previous_id", "previous_signature", "signature")
_BATCH = 1000


@dataclass(frozen=True)
class LogCopy:
    line: int
    checkpoint: AuditCheckpoint  # not saved: the copy, as the row it says the database holds


@dataclass(frozen=True)
class LogComparison:
    copies: int
    matched: int
    uncopied: int  # checkpoints of the database with no copy in the log
    problem: str | None = None


def read_copies(lines: Iterable[str]) -> Iterator[LogCopy]:
    """The checkpoint copies in a log, in the order of its lines; other lines are skipped."""
    for number, line in enumerate(lines, start=1):
        if "audit checkpoint" not in line:
            continue  # nearly every line: no JSON parsed, no pattern tried
        message = _message(line)
        if message is None:
            continue
        copy = _copy(message)
        if copy is not None:
            yield LogCopy(number, copy)


def _message(line: str) -> str | None:
    """The message of a checkpoint logger's line, JSON or plain; None for any other logger's line."""
    start = line.find("{")
    if start != -1:
        try:
            entry = json.loads(line[start:])
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            if entry.get("logger") in _LOGGERS and isinstance(entry.get("message"), str):
                return entry["message"]
            return None
    match = _PLAIN.search(line.rstrip("\n"))
    return match["message"] if match else None


def _copy(message: str) -> AuditCheckpoint | None:
    match = _COPY.match(message)
    if match is not None:
        fields = match.groupdict()
        return AuditCheckpoint(
            id=int(fields["checkpoint_id"]),
            version=int(fields["version"]),
            last_event_id=int(fields["last_event_id"]),
            last_hash=fields["last_hash"],
            event_count=int(fields["event_count"]),
            previous_id=None if fields["previous_id"] == "-" else int(fields["previous_id"]),
            previous_signature="" if fields["previous_signature"] == "-" else fields["previous_signature"],
            signature=fields["signature"],
        )
    match = _COPY_V1.match(message)
    if match is not None:
        fields = match.groupdict()
        return AuditCheckpoint(
            id=int(fields["checkpoint_id"]),
            version=1,
            last_event_id=int(fields["last_event_id"]),
            last_hash=fields["last_hash"],
            event_count=int(fields["event_count"]),
            previous_id=None,
            previous_signature="",
            signature=fields["signature"],
        )
    return None


def compare_with_log(lines: Iterable[str], *, source: str) -> LogComparison:
    """Every copy in the log genuine and the same in the database; the first that is not, by checkpoint id."""
    copies = sorted(read_copies(lines), key=lambda copy: (copy.checkpoint.pk, copy.line))
    if not copies:
        return LogComparison(
            0, 0, 0, f"{source} holds no checkpoint copies (lines of the {COPY_LOGGER} logger): nothing to compare"
        )
    for start in range(0, len(copies), _BATCH):
        batch = copies[start : start + _BATCH]
        stored = AuditCheckpoint.objects.in_bulk([copy.checkpoint.pk for copy in batch])
        for copy in batch:
            problem = _copy_problem(copy, stored.get(copy.checkpoint.pk), source)
            if problem is not None:
                return LogComparison(len(copies), 0, 0, problem)
    logged = len({copy.checkpoint.pk for copy in copies})
    return LogComparison(len(copies), logged, max(AuditCheckpoint.objects.count() - logged, 0))


def _copy_problem(copy: LogCopy, stored: AuditCheckpoint | None, source: str) -> str | None:
    logged, where = copy.checkpoint, f"{source} (line {copy.line})"
    if not checkpoint_is_genuine(logged):
        return (
            f"the copy of checkpoint {logged.pk} in {where} does not carry Gatehouse's signature: it was altered, or "
            "written by a Gatehouse with another GATEHOUSE_AUDIT_DIGEST_KEY (another environment's log?)"
        )
    if stored is None:
        return (
            f"checkpoint {logged.pk} is missing from the database: {where} holds its copy ({logged.event_count} "
            f"event(s) up to event {logged.last_event_id}): it was deleted, and the events after it may be rewritten"
        )
    for field in _COMPARED:
        if getattr(stored, field) != getattr(logged, field):
            return (
                f"checkpoint {logged.pk} in the database differs from its copy in {where}: {field} is "
                f"{getattr(stored, field)!r} in the database, {getattr(logged, field)!r} in the log: it was replaced"
            )
    return None
