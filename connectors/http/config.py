"""Configuration of an `http` system, checked when the system is saved rather than at first use."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from django.core.exceptions import ValidationError


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
    def parse(cls, raw: dict) -> HttpConfig:
        if not isinstance(raw, dict):
            raise ValidationError("Connector settings must be a JSON object.")
        unknown = set(raw) - {
            "base_url",
            "timeout",
            "connect_timeout",
            "health_path",
            "version_field",
            "expected_version_field",
        }
        if unknown:
            raise ValidationError(f"Unknown connector setting(s): {', '.join(sorted(unknown))}.")
        base_url = raw.get("base_url")
        parsed = urlparse(base_url or "")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValidationError('Set "base_url" to the system\'s http(s) address, e.g. "https://crm.example.com".')
        timeouts = {}
        for name in ("timeout", "connect_timeout"):
            if name in raw:
                value = raw[name]
                if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 120:
                    raise ValidationError(f'"{name}" must be a number of seconds between 0 and 120.')
                timeouts[name] = float(value)
        health_path = raw.get("health_path", "/_health")
        if not isinstance(health_path, str) or not health_path.startswith("/"):
            raise ValidationError('"health_path" must be a path starting with "/".')
        versions = {name: raw.get(name, "") for name in ("version_field", "expected_version_field")}
        if any(not isinstance(value, str) for value in versions.values()) or bool(versions["version_field"]) != bool(
            versions["expected_version_field"]
        ):
            raise ValidationError(
                'Set both "version_field" (the record\'s version, e.g. "version") and "expected_version_field" (where '
                'a write names the version it expects, e.g. "expected_version"), or neither.'
            )
        return cls(base_url=base_url.rstrip("/"), health_path=health_path, **timeouts, **versions)
