"""The `legacy_batch` connector: files dropped in a folder, parsed by a per-system mapping into event rows.

Parsing is pure (bytes in, rows and quarantined rows out); what was already processed, the transaction and the
moves belong to `connectors.legacy_batch.services.batch_poll`. A bad header sets the whole file aside; any other
fault sets aside only its row, with the reason and the row's raw text, so nothing is dropped silently.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError

from connectors.base import Connector, Health, PermanentError, RecordNotFound, Result
from connectors.hosts import within_drop_root
from connectors.legacy_batch.config import LegacyBatchConfig
from connectors.models import Event

# A file is read whole and its events written in one transaction: bound the memory that takes.
MAX_FILE_BYTES = 64 * 1024 * 1024
# Where files go once handled, inside the drop folder (never listed as waiting: only files at the top are).
PROCESSED, REJECTED, DUPLICATES = "processed", "rejected", "duplicates"
# Names an uploader is still writing under, by common convention.
_PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".filepart", "~")
_UNDECODED = re.compile("[\udc80-\udcff]")
_NUL = "\x00"
_INT = re.compile(r"^[+-]?\d+$")
RECORD_ID_MAX, KEY_MAX = 200, 300  # Event.record_id and Event.key


@dataclass(frozen=True)
class Row:
    """A good row: one event."""

    line: int
    raw: str
    record_id: str
    version: str
    data: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.record_id}@{self.version}"


@dataclass(frozen=True)
class BadRow:
    line: int
    raw: str
    reason: str


@dataclass
class ParsedFile:
    rows: list[Row] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    rejected: str = ""  # set when the whole file is set aside (bad header, empty, too large)


def printable(text: str) -> str:
    """The text with undecodable bytes and NULs written as \\xNN, so it can be stored and shown."""
    text = _UNDECODED.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)
    return text.replace(_NUL, "\\x00")


def _decode(config: LegacyBatchConfig, content: bytes) -> str:
    # surrogateescape keeps undecodable bytes as markers, so one bad byte costs its row, not the file.
    text = content.decode(config.encoding, errors="surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text


def _line_fault(config: LegacyBatchConfig, raw: str) -> str:
    bad = _UNDECODED.search(raw)
    if bad:
        return f"not valid {config.encoding}: byte 0x{ord(bad.group()) - 0xDC00:02X} (is the file in another encoding?)"
    if _NUL in raw:
        return "contains a NUL byte"
    return ""


def _convert(kind: str, value: str) -> Any:
    base, _, fmt = kind.partition(":")
    if base == "text":
        return value
    if value == "":
        return None
    if base == "int":
        if not _INT.match(value):
            raise ValueError(f"{value!r} is not a whole number")
        return int(value)
    if base == "decimal":
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
        if not number.is_finite():
            raise ValueError(f"{value!r} is not a number")
        return str(number)
    try:
        if base == "date":
            return (datetime.strptime(value, fmt).date() if fmt else date.fromisoformat(value)).isoformat()
        return (datetime.strptime(value, fmt) if fmt else datetime.fromisoformat(value)).isoformat()
    except ValueError:
        raise ValueError(f"{value!r} is not a {base}" + (f" like {fmt}" if fmt else " (ISO 8601)")) from None


def _row(config: LegacyBatchConfig, line: int, raw: str, values: dict[str, str]) -> Row | BadRow:
    """Typed event data from one row's field values, or the reason it cannot be one."""
    data: dict[str, Any] = {}
    for name, value in values.items():
        try:
            data[name] = _convert(config.types.get(name, "text"), value)
        except ValueError as exc:
            return BadRow(line, raw, f"{name}: {exc}")
    for name in (*config.record_id, config.version):
        if data.get(name) in (None, ""):
            return BadRow(line, raw, f"{name} is empty (it names the record or its version)")
    record_id = ":".join(str(data[name]) for name in config.record_id)
    version = str(data[config.version])
    if len(record_id) > RECORD_ID_MAX or len(record_id) + len(version) + 1 > KEY_MAX:
        return BadRow(line, raw, f"record id or version too long (at most {RECORD_ID_MAX} and {KEY_MAX} characters)")
    return Row(line, raw, record_id, version, data)


def _physical_lines(text: str, consumed: list[str]) -> Iterator[str]:
    """The file's lines (ends kept, any of \\n, \\r\\n, \\r), each noted in `consumed` as the csv reader takes it."""
    for line in io.StringIO(text, newline=""):
        consumed.append(line)
        yield line


def _cut_off(config: LegacyBatchConfig, raw: str, is_last: bool) -> bool:
    return is_last and config.final_newline and not raw.endswith(("\n", "\r"))


_CUT_OFF = "the last line has no line ending: the file looks cut off"


def parse_csv(config: LegacyBatchConfig, content: bytes) -> ParsedFile:
    """Rows of a CSV file by its header's column names, or the reason to set the whole file aside."""
    result = ParsedFile()
    text = _decode(config, content)
    consumed: list[str] = []
    reader = csv.reader(_physical_lines(text, consumed), delimiter=config.delimiter, strict=True)
    header, result.rejected = _csv_header(config, reader, consumed)
    if result.rejected:
        return result
    positions = {config.columns[column]: header.index(column) for column in config.columns}
    total_lines = sum(1 for _ in io.StringIO(text, newline=""))
    line_no = len(consumed)
    while True:
        consumed.clear()
        start = line_no + 1
        try:
            record = next(reader)
            error = ""
        except StopIteration:
            break
        except csv.Error as exc:
            record, error = [], str(exc)
        line_no += len(consumed)
        raw_with_end = "".join(consumed)
        raw = printable(raw_with_end.rstrip("\r\n"))
        if not error and not record:
            continue  # a blank line carries nothing
        reasons = _csv_row_faults(config, raw_with_end, line_no == total_lines, record, error, len(header))
        if reasons:
            result.bad.append(BadRow(start, raw, "; ".join(reasons)))
            continue
        _add(result, _row(config, start, raw, {name: record[index].strip() for name, index in positions.items()}))
    return result


def _csv_header(config: LegacyBatchConfig, reader: Iterator[list[str]], consumed: list[str]) -> tuple[list[str], str]:
    """The header's column names, and the reason to set the file aside ("" when it can be read)."""
    try:
        header = next(reader)
    except StopIteration:
        return [], "The file is empty: there is no header line."
    except csv.Error as exc:
        return [], f"The header line cannot be read as CSV: {exc}."
    fault = _line_fault(config, "".join(consumed))
    if fault:
        return [], f"The header line is {fault}."
    header = [name.strip() for name in header]
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        return header, f"The header names column(s) {', '.join(twice)} more than once."
    missing = [column for column in config.columns if column not in header]
    if missing:
        return header, (
            f"The header lacks column(s) {', '.join(missing)} (found: {', '.join(header) or 'nothing'})."
            " Check the file, or the system's column mapping."
        )
    return header, ""


def _csv_row_faults(
    config: LegacyBatchConfig, raw_with_end: str, is_last: bool, record: list[str], error: str, width: int
) -> list[str]:
    """Why one CSV row cannot be an event (the csv reader's `error`, a cut-off end, bad bytes, a column count)."""
    reasons = []
    if _cut_off(config, raw_with_end, is_last) or error == "unexpected end of data":
        reasons.append(_CUT_OFF if not error else "a quoted value is never closed: the file looks cut off")
    elif error:
        reasons.append(f"not readable as CSV: {error}")
    fault = _line_fault(config, raw_with_end)
    if fault:
        reasons.append(fault)
    if not error and len(record) != width:
        reasons.append(f"has {len(record)} of the header's {width} columns")
    return reasons


def parse_fixed_width(config: LegacyBatchConfig, content: bytes) -> ParsedFile:
    result = ParsedFile()
    text = _decode(config, content)
    lines = list(io.StringIO(text, newline=""))
    if not lines:
        result.rejected = "The file is empty."
        return result
    first = 0
    if config.header:
        header_raw = lines[0]
        fault = _line_fault(config, header_raw)
        if fault:
            result.rejected = f"The header line is {fault}."
            return result
        if header_raw.rstrip("\r\n").rstrip() != config.header:
            result.rejected = (
                f"The header line reads {header_raw.rstrip()[:120]!r}; the layout expects {config.header[:120]!r}."
            )
            return result
        first = 1
    width = max(spec.end for spec in config.fields)
    for index in range(first, len(lines)):
        raw_with_end = lines[index]
        body = raw_with_end.rstrip("\r\n")
        raw, line = printable(body), index + 1
        if not body.strip():
            continue
        reasons = []
        if _cut_off(config, raw_with_end, index == len(lines) - 1):
            reasons.append(_CUT_OFF)
        fault = _line_fault(config, raw_with_end)
        if fault:
            reasons.append(fault)
        if len(body) < width:
            reasons.append(f"is {len(body)} characters long; the layout needs {width}")
        if reasons:
            result.bad.append(BadRow(line, raw, "; ".join(reasons)))
            continue
        _add(
            result,
            _row(config, line, raw, {spec.field: body[spec.start - 1 : spec.end].strip() for spec in config.fields}),
        )
    return result


def _add(result: ParsedFile, row: Row | BadRow) -> None:
    if isinstance(row, Row):
        result.rows.append(row)
    else:
        result.bad.append(row)


def parse_batch(config: LegacyBatchConfig, content: bytes) -> ParsedFile:
    """Rows and quarantined rows of one file, or the reason to set the whole file aside."""
    if len(content) > MAX_FILE_BYTES:
        return ParsedFile(rejected=f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB.")
    if config.format == "fixed_width":
        return parse_fixed_width(config, content)
    return parse_csv(config, content)


@dataclass(frozen=True)
class Waiting:
    """Files in the drop folder ready to be taken, oldest first, and how many are still being written."""

    files: list[Path]
    unsettled: int


class LegacyBatchConnector(Connector):
    """A batch system: nothing is written to it, and what it reports arrives as files in its drop folder."""

    def __init__(self, system, secret: str | None, vaulted=None) -> None:
        super().__init__(system, secret, vaulted)
        try:
            self.config = LegacyBatchConfig.parse(system.connector_config)
        except ValidationError as exc:
            raise PermanentError(f"{system}: connector settings: {' '.join(exc.messages)}") from exc

    @property
    def folder(self) -> Path:
        return self.config.drop_folder

    def waiting(self, now: float | None = None) -> Waiting:
        """Regular files at the top of the drop folder matching the pattern and unchanged for `settle_seconds`.

        Hidden files, names uploaders write under (.part, .tmp, …) and symbolic links are never taken.
        """
        now = time.time() if now is None else now
        if not self.folder.is_dir():
            raise PermanentError(f"The drop folder {self.folder} does not exist (or is not a folder).")
        found: list[tuple[int, str, Path]] = []
        unsettled = 0
        with os.scandir(self.folder) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or name.endswith(_PARTIAL_SUFFIXES) or not entry.is_file(follow_symlinks=False):
                    continue
                if not fnmatchcase(name, self.config.pattern):
                    continue
                mtime_ns = entry.stat(follow_symlinks=False).st_mtime_ns
                if now - mtime_ns / 1e9 < self.config.settle_seconds:
                    unsettled += 1
                    continue
                found.append((mtime_ns, name, Path(entry.path)))
        return Waiting([path for _, _, path in sorted(found)], unsettled)

    def move_aside(self, path: Path, subfolder: str, name: str) -> str:
        """Move a handled file into `subfolder` of the drop folder under `name`; returns the new path."""
        target_dir = self.folder / subfolder
        if not within_drop_root(target_dir, self.folder):  # a subfolder swapped for a link to elsewhere
            raise PermanentError(f"{target_dir} leads outside the drop roots: the file stays where it is.")
        target_dir.mkdir(exist_ok=True)
        target = target_dir / name
        os.replace(path, target)
        return str(target)

    def read(self, resource: str, record_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        """The record as the system last reported it: the newest event for it (Gatehouse's copy, not the system)."""
        event = (
            Event.objects.filter(system=self.system, resource__name=resource, record_id=record_id)
            .order_by("-id")
            .first()
        )
        if event is None:
            raise RecordNotFound(f"{self.system} has reported no {resource} record {record_id!r}.")
        data = dict(event.data)
        return {name: data.get(name) for name in fields} if fields else data

    def execute(
        self, action, record_id: str, payload: dict[str, Any], idempotency_key: str, *, expected=None
    ) -> Result:
        raise PermanentError(
            f"{self.system} is a batch system: Gatehouse cannot write to it. Make it propose-only, so approved "
            "proposals become manual tasks."
        )

    def health(self) -> Health:
        folder = self.folder
        if not folder.is_dir():
            return Health(False, f"The drop folder {folder} does not exist.")
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            return Health(False, f"Gatehouse cannot read and move files in {folder}.")
        resource = self.system.resources.filter(name=self.config.resource).first()
        if resource is None:
            return Health(False, f'The resource "{self.config.resource}" of {self.system} does not exist.')
        unknown = [name for name in self.config.event_fields if name not in resource.fields]
        if unknown:
            return Health(False, f"Mapped fields not listed on {resource}: {', '.join(unknown)}.")
        return Health(True)
