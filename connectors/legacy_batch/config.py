"""Configuration of a `legacy_batch` system, checked when the system is saved rather than at first poll.

A CSV drop (file column → event field):

    {"drop_folder": "/srv/drops/inventory", "every": 60,
     "columns": {"ITEM_NO": "sku", "WHSE": "warehouse", "QTY_ON_HAND": "quantity", "AS_OF": "as_of"},
     "record_id": ["sku", "warehouse"], "version": "as_of",
     "types": {"quantity": "int", "as_of": "date:%Y%m%d"}}

A fixed-width drop names each field's columns instead (1-based, inclusive), with an optional header line:

    {"format": "fixed_width", "fields": [{"field": "sku", "start": 1, "end": 10}, ...], "header": "ITEM_NO   WHSE"}
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError

from connectors.config import settings_object
from connectors.hosts import drop_folder_refusal

FORMATS = ("csv", "fixed_width")
TYPES = ("text", "int", "decimal", "date", "datetime")
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,59}$")
_KEYS = {
    "drop_folder",
    "every",
    "format",
    "encoding",
    "delimiter",
    "columns",
    "fields",
    "header",
    "record_id",
    "version",
    "types",
    "resource",
    "pattern",
    "settle_seconds",
    "final_newline",
    "sftp",
}


@dataclass(frozen=True)
class FixedWidthField:
    field: str
    start: int  # 1-based, inclusive
    end: int  # 1-based, inclusive


@dataclass(frozen=True)
class LegacyBatchConfig:
    drop_folder: Path
    record_id: tuple[str, ...]
    version: str
    every: int = 60
    format: str = "csv"
    encoding: str = "utf-8"
    delimiter: str = ","
    columns: dict[str, str] = field(default_factory=dict)  # csv: file column → event field
    fields: tuple[FixedWidthField, ...] = ()  # fixed_width
    header: str = ""  # fixed_width: the first line must read exactly this (trailing blanks ignored)
    types: dict[str, str] = field(default_factory=dict)  # event field → "int", "date:%Y%m%d", …
    resource: str = "events"
    pattern: str = "*"
    settle_seconds: int = 5
    final_newline: bool = True

    @property
    def event_fields(self) -> list[str]:
        """The fields an event's data holds, in file order."""
        if self.format == "csv":
            return list(self.columns.values())
        return [spec.field for spec in self.fields]

    @classmethod
    def parse(cls, raw: Any) -> LegacyBatchConfig:
        """The settings, or a ValidationError naming the first thing to change."""
        settings_object(raw, _KEYS)
        if "sftp" in raw:
            # Polling over SFTP needs an SSH client library and host-key management Gatehouse does not have yet.
            raise ValidationError(
                'SFTP is not supported yet: mount the remote folder (e.g. with sshfs) and set "drop_folder" to it.'
            )
        values = _drop_settings(raw)
        mapped = _csv_settings(raw, values) if values["format"] == "csv" else _fixed_width_settings(raw, values)
        values["record_id"], values["version"] = _record_key(raw, mapped)
        values["types"] = _types(raw, mapped)
        return cls(**values)


def _drop_settings(raw: dict) -> dict[str, Any]:
    """Where the files arrive, how often they are looked for, which are taken, and how they are read."""
    drop_folder = raw.get("drop_folder")
    if not isinstance(drop_folder, str) or not Path(drop_folder).is_absolute():
        raise ValidationError('Set "drop_folder" to the absolute path of the folder the system drops files in.')
    refusal = drop_folder_refusal(Path(drop_folder))
    if refusal:
        raise ValidationError(f'"drop_folder": {refusal}')
    values: dict[str, Any] = {"drop_folder": Path(drop_folder)}
    values["every"] = _whole(raw, "every", 60, 1, 7 * 86400, "seconds between polls")
    values["settle_seconds"] = _whole(raw, "settle_seconds", 5, 0, 3600, "seconds a file must sit unchanged")
    fmt = raw.get("format", "csv")
    if fmt not in FORMATS:
        raise ValidationError(f'"format" must be one of: {", ".join(FORMATS)}.')
    values["format"] = fmt
    values["encoding"] = _encoding(raw)
    for name in ("resource", "pattern"):
        if name in raw:
            if not isinstance(raw[name], str) or not raw[name].strip():
                raise ValidationError(f'"{name}" must be a non-empty string.')
            values[name] = raw[name].strip()
    if "/" in values.get("pattern", ""):
        raise ValidationError('"pattern" matches file names in the drop folder; it cannot contain "/".')
    if not isinstance(raw.get("final_newline", True), bool):
        raise ValidationError('"final_newline" must be true or false.')
    values["final_newline"] = raw.get("final_newline", True)
    return values


def _encoding(raw: dict) -> str:
    """The canonical name of the files' encoding (e.g. "utf8" becomes "utf-8")."""
    encoding = raw.get("encoding", "utf-8")
    try:
        name = codecs.lookup(encoding).name if isinstance(encoding, str) else None
    except LookupError:
        name = None
    if name is None:
        raise ValidationError(f'"encoding" {encoding!r} is not an encoding Python knows (e.g. "utf-8", "cp1252").')
    return name


def _record_key(raw: dict, mapped: list[str]) -> tuple[tuple[str, ...], str]:
    """The mapped fields that name a row's record, and the one that tells its versions apart."""
    record_id = raw.get("record_id")
    if isinstance(record_id, str):
        record_id = [record_id]
    if not isinstance(record_id, list) or not record_id or not all(isinstance(n, str) for n in record_id):
        raise ValidationError('Set "record_id" to the event field (or list of fields) that names the record.')
    version = raw.get("version")
    if not isinstance(version, str) or not version:
        raise ValidationError(
            'Set "version" to the event field that tells versions of a record apart (e.g. "as_of"): '
            "a row is one event per record and version."
        )
    missing = [name for name in [*record_id, version] if name not in mapped]
    if missing:
        raise ValidationError(f"Not a mapped field: {', '.join(missing)}.")
    return tuple(record_id), version


def _types(raw: dict, mapped: list[str]) -> dict[str, str]:
    """Mapped field -> its type ("int", "date:%Y%m%d", …); a date format is tried once here, not at the first file."""
    types = raw.get("types", {})
    if not isinstance(types, dict):
        raise ValidationError('"types" must map event fields to a type.')
    for name, kind in types.items():
        if name not in mapped:
            raise ValidationError(f'"types" names {name!r}, which is not a mapped field.')
        if not isinstance(kind, str) or kind.split(":", 1)[0] not in TYPES:
            raise ValidationError(f'Type of {name!r} must be one of: {", ".join(TYPES)} (dates: "date:%Y%m%d").')
        base, _, fmt_text = kind.partition(":")
        if fmt_text and base not in ("date", "datetime"):
            raise ValidationError(f"Only dates take a format; {name!r} is {base}.")
        if fmt_text:
            try:
                datetime(2026, 1, 2, 3, 4, 5).strftime(fmt_text)
            except ValueError as exc:
                raise ValidationError(f"Date format of {name!r}: {exc}.") from exc
    return dict(types)


def _whole(raw: dict, name: str, default: int, low: int, high: int, what: str) -> int:
    value = raw.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValidationError(f'"{name}" must be a whole number of {what}, {low} to {high}.')
    return value


def _check_field_name(name: object) -> str:
    if not isinstance(name, str) or not _FIELD_NAME.match(name):
        raise ValidationError(f"{name!r} is not a field name (lower case letters, digits and _).")
    return name


def _csv_settings(raw: dict, values: dict) -> list[str]:
    for name in ("fields", "header"):
        if name in raw:
            raise ValidationError(f'"{name}" is a fixed-width setting; CSV files map "columns".')
    delimiter = raw.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise ValidationError('"delimiter" must be one character (e.g. "," or ";" or "\\t").')
    values["delimiter"] = delimiter
    columns = raw.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise ValidationError(
            'Set "columns" to map the file\'s header columns to event fields, e.g. {"QTY": "quantity"}.'
        )
    for column, name in columns.items():
        if not column.strip():
            raise ValidationError('"columns" has an empty column name.')
        _check_field_name(name)
    fields = list(columns.values())
    if len(set(fields)) != len(fields):
        raise ValidationError('"columns" maps two columns to the same field.')
    values["columns"] = {column.strip(): name for column, name in columns.items()}
    return fields


def _fixed_width_settings(raw: dict, values: dict) -> list[str]:
    for name in ("columns", "delimiter"):
        if name in raw:
            raise ValidationError(f'"{name}" is a CSV setting; fixed-width files list "fields".')
    specs = raw.get("fields")
    if not isinstance(specs, list) or not specs:
        raise ValidationError('Set "fields" to a list of {"field": name, "start": 1, "end": 10} (1-based columns).')
    parsed: list[FixedWidthField] = []
    for spec in specs:
        if not isinstance(spec, dict) or set(spec) != {"field", "start", "end"}:
            raise ValidationError('Each of "fields" must be {"field": name, "start": n, "end": m}.')
        start, end = spec["start"], spec["end"]
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (start, end)) or not 1 <= start <= end:
            raise ValidationError(f"Field {spec['field']!r}: start and end are columns from 1, start ≤ end.")
        parsed.append(FixedWidthField(_check_field_name(spec["field"]), start, end))
    names = [spec.field for spec in parsed]
    if len(set(names)) != len(names):
        raise ValidationError('"fields" names a field twice.')
    ordered = sorted(parsed, key=lambda spec: spec.start)
    for before, after in pairwise(ordered):
        if after.start <= before.end:
            raise ValidationError(f"Fields {before.field!r} and {after.field!r} overlap.")
    header = raw.get("header", "")
    if not isinstance(header, str):
        raise ValidationError('"header" must be the text of the header line, or left out when there is none.')
    values["fields"], values["header"] = tuple(parsed), header.rstrip()
    return names
