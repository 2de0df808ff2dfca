"""Streaming exports of audit events: CSV for people, JSON lines for a SIEM. Memory stays flat at any row count."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.db.models import Case, CharField, F, Func, QuerySet, TextField, Value, When
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce, Concat
from django.http import StreamingHttpResponse
from django.utils import timezone

CHUNK_SIZE = 2000
BATCH_ROWS = 500

# Column name → the value read from the database (joined slugs instead of ids: a reader knows "crm", not 3).
COLUMNS: dict[str, str] = {
    "id": "id",
    "occurred_at": "occurred_at",
    "verb": "verb",
    "actor_type": "actor_type",
    "actor": "actor",
    "agent": "agent__slug",
    "person": "person__username",
    "system": "system__slug",
    "channel": "channel",
    "resource": "resource",
    "record_id": "record_id",
    "proposal_id": "proposal_id",
    "outcome": "outcome",
    "summary": "summary",
    "request_id": "request_id",
    "input": "input",
    "decision": "decision",
    "state_before": "state_before",
    "state_after": "state_after",
    "prev_hash": "prev_hash",
    "hash": "hash",
    # Appended (readers rely on the order above): the reason a person gave, e.g. for a configuration change.
    "reason": "reason_given",
    # The OpenTelemetry trace the event was written in (blank with tracing off): where the auditor's trail meets the
    # operator's traces.
    "trace_id": "trace_id",
}
_JSON_COLUMNS = {"input", "decision", "state_before", "state_after"}
# A cell starting with one of these is a formula to a spreadsheet: an agent's text must not run in the CFO's Excel.
_FORMULA_PATTERN = r"^[=+@\t\r-]"
# Free text written by agents or people; ids, hashes, slugs and choices cannot start with a formula character.
_FREE_TEXT = {"actor", "resource", "record_id", "outcome", "summary", "request_id", "reason"}
_COPY_FLUSH_BYTES = 256 * 1024
# A download's name comes from a record id, which may hold anything: only these characters reach the header.
_FILE_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# Times are exported in UTC, ISO 8601: unambiguous for a SIEM and for a spreadsheet alike.
EXPORT_FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "jsonl": ("application/x-ndjson; charset=utf-8", "jsonl"),
}


def _values(queryset: QuerySet, *, defuse: bool, text_times: bool = False) -> QuerySet:
    """The export's columns in COLUMNS order, in id order, computed by the database.

    JSON columns come as the database's own JSON text (no parse, no re-dump). With `defuse`, plain text an agent or
    a person wrote is neutralised for spreadsheets (a leading `'`), by the database for both CSV writers. With
    `text_times` the time is ISO 8601 UTC text made by PostgreSQL, for COPY.
    """
    fields: dict[str, Any] = {}
    for name, source in COLUMNS.items():
        if name in _JSON_COLUMNS:
            fields[name] = Cast(source, TextField())
        elif defuse and name in _FREE_TEXT:
            fields[name] = Case(
                When(**{f"{source}__regex": _FORMULA_PATTERN}, then=Concat(Value("'"), F(source))),
                default=F(source),
            )
        elif name == "occurred_at" and text_times:
            fields[name] = _IsoUtc(F(source))
        else:
            fields[name] = F(source)
    reason = Coalesce(KeyTextTransform("reason", "input"), Value(""), output_field=CharField())
    queryset = queryset.annotate(reason_given=reason)
    return queryset.order_by("id").values_list(*fields.values())


class _IsoUtc(Func):
    """`2026-11-17T14:01:00.000000+00:00`, the same text `datetime.isoformat(timespec="microseconds")` gives."""

    template = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"
    output_field = TextField()


def _rows(queryset: QuerySet, *, defuse: bool) -> Iterator[tuple[Any, ...]]:
    yield from _values(queryset, defuse=defuse).iterator(chunk_size=CHUNK_SIZE)


def _batched(lines: Iterator[str]) -> Iterator[str]:
    """Hand the server a few hundred rows at a time: one write per row would cost more than making the row."""
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= BATCH_ROWS:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


class _Echo:
    """csv.writer writes to this and gets the line back, so each row can be yielded as soon as it is made."""

    def write(self, value: str) -> str:
        return value


_HEADER = "\ufeff" + ",".join(COLUMNS) + "\r\n"  # the BOM, so Excel reads the file as UTF-8


def csv_lines(queryset: QuerySet) -> Iterator[str | bytes]:
    """CSV of every row: PostgreSQL writes it itself (`COPY … TO STDOUT`), elsewhere Python's csv module does.

    Both give the same cells (tested): times in ISO 8601 UTC, JSON as JSON text, empty for none, formulas defused.
    """
    if connections[queryset.db].vendor == "postgresql":
        return csv_by_copy(queryset)
    return csv_by_python(queryset)


def csv_by_python(queryset: QuerySet) -> Iterator[str]:
    """The CSV written row by row by Python's csv module (SQLite, and any database without COPY)."""
    writer = csv.writer(_Echo())
    time_at = list(COLUMNS).index("occurred_at")

    def lines() -> Iterator[str]:
        yield _HEADER
        for row in _rows(queryset, defuse=True):
            cells = list(row)
            cells[time_at] = cells[time_at].isoformat(timespec="microseconds")
            yield writer.writerow(cells)

    return _batched(lines())


def csv_by_copy(queryset: QuerySet) -> Iterator[bytes]:
    """`COPY (the filtered query) TO STDOUT (FORMAT csv)`: rows stream in blocks, several times faster than Python."""
    sql, params = _values(queryset, defuse=True, text_times=True).query.sql_with_params()
    yield _HEADER.encode()
    connection = connections[queryset.db]
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)", params) as copy:
        buffer: list[bytes] = []
        size = 0
        for block in copy:
            buffer.append(bytes(block))
            size += len(block)
            if size >= _COPY_FLUSH_BYTES:
                yield b"".join(buffer)
                buffer, size = [], 0
        if buffer:
            yield b"".join(buffer)


def jsonl_lines(queryset: QuerySet) -> Iterator[str]:
    names = list(COLUMNS)
    scalar_at = [index for index, name in enumerate(names) if name not in _JSON_COLUMNS]
    json_at = [index for index, name in enumerate(names) if name in _JSON_COLUMNS]
    encoder = DjangoJSONEncoder(ensure_ascii=False, separators=(",", ":"))

    def lines() -> Iterator[str]:
        for row in _rows(queryset, defuse=False):
            scalars = encoder.encode({names[index]: row[index] for index in scalar_at})
            nested = "".join(f',"{names[index]}":{row[index] or "null"}' for index in json_at)
            yield scalars[:-1] + nested + "}\n"

    return _batched(lines())


def may_export(user: Any) -> bool:
    """Who may export audit events from a page (the changelist's exports, a timeline's Export): whoever may read
    them there. The `export_audit` command is for operators at the server, who can read the database anyway."""
    return bool(user.is_active and user.has_perm("audit.view_auditevent"))


def export_response(queryset: QuerySet, *, kind: str, name: str = "") -> StreamingHttpResponse:
    """Every event of `queryset` as a download, in id order; the file is named `name` (e.g. "crm-4471-2026-12-02"),
    else `audit-events-<now>`."""
    content_type, extension = EXPORT_FORMATS[kind]
    lines = csv_lines(queryset) if kind == "csv" else jsonl_lines(queryset)
    response = StreamingHttpResponse(lines, content_type=content_type)
    stem = _FILE_NAME_UNSAFE.sub("_", name).strip("._")[:120] if name else ""
    stem = stem or "audit-events-" + timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="{stem}.{extension}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
