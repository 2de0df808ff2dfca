"""Configuration of a `soap` system and of its actions, checked when they are saved rather than at first use.

The system's settings (System.connector_config) say where the WSDL is and which operation reads each resource::

    {
      "wsdl_url": "http://inventory.example.com/inventory?wsdl",
      "resources": {
        "items": {"operation": "GetItem", "id_param": "sku",
                  "fields": {"name": "name", "quantity": "quantity", "updated_at": "updatedAt"}}
      }
    }

Optional: "service" and "port" (names in the WSDL; default the first), "endpoint" (an address that overrides the
WSDL's soap:address), "timeout" and "connect_timeout" (seconds), "health_operation" (an operation taking no
parameters), "not_found_faults" (words that mark a fault as "no such record"; default "not found"/"notfound",
matched case-insensitively in the fault string, the fault code and the detail's element names). A resource may give
"result", the path inside the answer to the record, and "fields", the record's whole shape as field -> path in the
answer (paths are element names joined by dots); without "fields" the answer's own elements are the record.

Each action's `operation` (ActionType.operation) maps it to a call::

    {"operation": "SetQuantity", "id_param": "sku", "params": {"quantity": "quantity"},
     "idempotency_param": "requestId", "before": {"quantity": "before"}, "after": {"quantity": "after"}}

"params" maps each SOAP parameter to the payload field that fills it; the record id goes in "id_param" and the
idempotency key, when the service takes one, in "idempotency_param". "before" and "after" (optional) name the answer
elements that hold a field's value before and after the write: the system's own account wins over Gatehouse's read.
Undo (restore_fields) calls the same operation with the values from before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError

from connectors.config import http_url, seconds, settings_object
from governance.choices import Compensation

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")  # an XML element or operation name
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,59}$")


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValidationError(f"{what} must be a SOAP name such as GetItem or sku (got {value!r}).")
    return value


def _optional_name(raw: dict, key: str, what: str) -> str | None:
    return _name(raw[key], what) if raw.get(key) is not None else None


def _path(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _PATH.match(value):
        raise ValidationError(f"{what} must be an element name or a dotted path such as item.quantity (got {value!r}).")
    return value


def _field_map(value: Any, what: str, *, target: str) -> dict[str, str]:
    """A JSON object of Gatehouse field -> `target` (a path in the answer or a payload field)."""
    if not isinstance(value, dict) or not value:
        raise ValidationError(f"{what} must be a JSON object of field name -> {target}.")
    for name, path in value.items():
        if not _FIELD.match(name):
            raise ValidationError(f"{what}: {name!r} is not a field name (letters, digits and underscores).")
        _path(path, f"{what}[{name!r}]")
    return dict(value)


@dataclass(frozen=True)
class SoapResource:
    """How one resource is read: which operation, which parameter takes the record id, where the record is."""

    operation: str
    id_param: str
    result: str | None = None
    fields: dict[str, str] | None = None

    KEYS = frozenset({"operation", "id_param", "result", "fields"})

    @classmethod
    def parse(cls, name: str, raw: Any) -> SoapResource:
        where = f'resources["{name}"]'
        example = '{"operation": "GetItem", "id_param": "sku"}'
        settings_object(
            raw, cls.KEYS, where=where, list_known=True, not_object=f"{where} must be a JSON object such as {example}."
        )
        result = raw.get("result")
        fields = raw.get("fields")
        return cls(
            operation=_name(raw.get("operation"), f"{where}.operation"),
            id_param=_name(raw.get("id_param"), f"{where}.id_param"),
            result=_path(result, f"{where}.result") if result is not None else None,
            fields=_field_map(fields, f"{where}.fields", target="path in the answer") if fields is not None else None,
        )


@dataclass(frozen=True)
class SoapConfig:
    wsdl_url: str
    resources: dict[str, SoapResource]
    service: str | None = None
    port: str | None = None
    endpoint: str | None = None
    timeout: float = 10.0
    connect_timeout: float = 2.0
    health_operation: str | None = None
    not_found_faults: tuple[str, ...] = ("not found", "notfound")

    KEYS = frozenset(
        {
            "wsdl_url",
            "resources",
            "service",
            "port",
            "endpoint",
            "timeout",
            "connect_timeout",
            "health_operation",
            "not_found_faults",
        }
    )

    @classmethod
    def parse(cls, raw: Any) -> SoapConfig:
        settings_object(raw, cls.KEYS, list_known=True)
        wsdl_url = http_url(
            raw,
            "wsdl_url",
            invalid='Set "wsdl_url" to an http(s) address, e.g. "https://inventory.example.com/inventory?wsdl".',
        )
        endpoint = http_url(
            raw,
            "endpoint",
            invalid='Set "endpoint" to an http(s) address, e.g. "https://inventory.example.com/inventory".',
            required=False,
        )
        resources = raw.get("resources")
        if not isinstance(resources, dict) or not resources:
            raise ValidationError(
                'Map at least one resource to the operation that reads it: "resources": {"items": '
                '{"operation": "GetItem", "id_param": "sku"}}.'
            )
        markers = raw.get("not_found_faults", list(cls.not_found_faults))
        if not isinstance(markers, list) or not markers or not all(isinstance(m, str) and m.strip() for m in markers):
            raise ValidationError('"not_found_faults" must be a list of words, e.g. ["not found"].')
        return cls(
            wsdl_url=wsdl_url,
            resources={name: SoapResource.parse(name, spec) for name, spec in resources.items()},
            service=_optional_name(raw, "service", '"service"'),
            port=_optional_name(raw, "port", '"port"'),
            endpoint=endpoint,
            timeout=seconds(raw, "timeout", cls.timeout, maximum=120),
            connect_timeout=seconds(raw, "connect_timeout", cls.connect_timeout, maximum=120),
            health_operation=_optional_name(raw, "health_operation", '"health_operation"'),
            not_found_faults=tuple(marker.strip().lower() for marker in markers),
        )


@dataclass(frozen=True)
class SoapAction:
    """How one action is performed: an operation, its parameters filled from the payload, the record id and the key."""

    operation: str
    id_param: str
    params: dict[str, str]
    idempotency_param: str | None = None
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)

    KEYS = frozenset({"operation", "id_param", "params", "idempotency_param", "before", "after"})

    @classmethod
    def parse(cls, raw: Any) -> SoapAction:
        example = (
            '{"operation": "SetQuantity", "id_param": "sku", "params": {"quantity": "quantity"}, '
            '"idempotency_param": "requestId"}'
        )
        not_mapped = f"Map the action to a SOAP operation, e.g. {example}."
        settings_object(raw, cls.KEYS, where="operation", list_known=True, not_object=not_mapped)
        if not raw:
            raise ValidationError(not_mapped)
        params = raw.get("params")
        if not isinstance(params, dict) or not params:
            raise ValidationError(f'"params" must map each SOAP parameter to a payload field, e.g. {example}.')
        for param, payload_field in params.items():
            _name(param, "A parameter in params")
            if not isinstance(payload_field, str) or not _FIELD.match(payload_field):
                raise ValidationError(f"params[{param!r}] must name a payload field (got {payload_field!r}).")
        id_param = _name(raw.get("id_param"), '"id_param"')
        idempotency_param = _optional_name(raw, "idempotency_param", '"idempotency_param"')
        if idempotency_param == id_param:
            raise ValidationError('"id_param" and "idempotency_param" must be different parameters.')
        for taken, by in ((id_param, "the record id"), (idempotency_param, "the idempotency key")):
            if taken in params:
                raise ValidationError(f'The parameter "{taken}" is filled by {by}; remove it from "params".')
        fields = set(params.values())
        before = _field_map(raw["before"], '"before"', target="element of the answer") if raw.get("before") else {}
        after = _field_map(raw["after"], '"after"', target="element of the answer") if raw.get("after") else {}
        for what, mapping in (('"before"', before), ('"after"', after)):
            stray = sorted(set(mapping) - fields)
            if stray:
                raise ValidationError(f"{what} names field(s) the action does not write: {', '.join(stray)}.")
        return cls(
            operation=_name(raw.get("operation"), '"operation"'),
            id_param=id_param,
            params=dict(params),
            idempotency_param=idempotency_param,
            before=before,
            after=after,
        )


def operation_errors(operation: Any, compensation: str) -> dict[str, str]:
    """What is wrong with a SOAP action's mapping and its way back, by field, when the action is saved."""
    errors: dict[str, str] = {}
    try:
        SoapAction.parse(operation)
    except ValidationError as exc:
        errors["operation"] = " ".join(exc.messages)
    if compensation == Compensation.DELETE_CREATED:
        errors["compensation"] = "A SOAP action is undone by restoring the fields it wrote, or not at all."
    return errors
