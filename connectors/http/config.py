"""Configuration of an `http` system, checked when the system is saved rather than at first use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from connectors.config import http_url, seconds, settings_object

_KEYS = {"base_url", "timeout", "connect_timeout", "health_path", "version_field", "expected_version_field"}


@dataclass(frozen=True)
class HttpConfig:
    base_url: str
    timeout: float = 5.0
    connect_timeout: float = 2.0
    health_path: str = "/_health"
    # Optimistic concurrency, when the system offers it: the record's version field, and the body field a write
    # names the version it expects in (the system answers 409 when the record has moved on). A reversal uses it so
    # that a change made between its check and its write is never overwritten.
    version_field: str = ""
    expected_version_field: str = ""

    @classmethod
    def parse(cls, raw: Any) -> HttpConfig:
        settings_object(raw, _KEYS)
        base_url = http_url(
            raw, "base_url", invalid='Set "base_url" to the system\'s http(s) address, e.g. "https://crm.example.com".'
        )
        timeout = seconds(raw, "timeout", cls.timeout, maximum=120)
        connect_timeout = seconds(raw, "connect_timeout", cls.connect_timeout, maximum=120)
        health_path = raw.get("health_path", "/_health")
        if not isinstance(health_path, str) or not health_path.startswith("/"):
            raise ValidationError('"health_path" must be a path starting with "/".')
        version_field, expected_version_field = raw.get("version_field", ""), raw.get("expected_version_field", "")
        if (
            not isinstance(version_field, str)
            or not isinstance(expected_version_field, str)
            or bool(version_field) != bool(expected_version_field)
        ):
            raise ValidationError(
                'Set both "version_field" (the record\'s version, e.g. "version") and "expected_version_field" (where '
                'a write names the version it expects, e.g. "expected_version"), or neither.'
            )
        return cls(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            connect_timeout=connect_timeout,
            health_path=health_path,
            version_field=version_field,
            expected_version_field=expected_version_field,
        )
