"""Streaming exports of audit events: CSV for people, JSON lines for a SIEM. Memory stays flat at any row count."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import F, QuerySet, TextField
from django.db.models.functions import Cast
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
}
_JSON_COLUMNS = {"input", "decision", "state_before", "state_after"}
# A cell starting with one of these is a formula to a spreadsheet: an agent's text must not run in the CFO's Excel.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

# Times are exported in UTC, ISO 8601: unambiguous for a SIEM and for a spreadsheet alike.
EXPORT_FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "jsonl": ("application/x-ndjson; charset=utf-8", "jsonl"),
}


def _rows(queryset: QuerySet) -> Iterator[tuple[Any, ...]]:
    """Rows as tuples in COLUMNS order; JSON columns as the database's own JSON text (no parse, no re-dump)."""
    fields = {
        name: Cast(source, TextField()) if name in _JSON_COLUMNS else F(source) for name, source in COLUMNS.items()
    }
    values = queryset.order_by("id").values_list(*fields.values())
    yield from values.iterator(chunk_size=CHUNK_SIZE)


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


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def csv_lines(queryset: QuerySet) -> Iterator[str]:
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield "\ufeff"  # so Excel reads the file as UTF-8
        yield writer.writerow(list(COLUMNS))
        json_at = {index for index, name in enumerate(COLUMNS) if name in _JSON_COLUMNS}
        for row in _rows(queryset):
            # JSON text is data, not a formula: only plain text columns are neutralised.
            yield writer.writerow(
                [
                    ("" if value is None else value) if index in json_at else _csv_cell(value)
                    for index, value in enumerate(row)
                ]
            )

    return _batched(lines())


def jsonl_lines(queryset: QuerySet) -> Iterator[str]:
    names = list(COLUMNS)
    scalar_at = [index for index, name in enumerate(names) if name not in _JSON_COLUMNS]
    json_at = [index for index, name in enumerate(names) if name in _JSON_COLUMNS]
    encoder = DjangoJSONEncoder(ensure_ascii=False, separators=(",", ":"))

    def lines() -> Iterator[str]:
        for row in _rows(queryset):
            scalars = encoder.encode({names[index]: row[index] for index in scalar_at})
            nested = "".join(f',"{names[index]}":{row[index] or "null"}' for index in json_at)
            yield scalars[:-1] + nested + "}\n"

    return _batched(lines())


def export_response(queryset: QuerySet, *, kind: str) -> StreamingHttpResponse:
    content_type, extension = EXPORT_FORMATS[kind]
    lines = csv_lines(queryset) if kind == "csv" else jsonl_lines(queryset)
    response = StreamingHttpResponse(lines, content_type=content_type)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-events-{stamp}.{extension}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
