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

    @classmethod
    def parse(cls, raw: dict) -> HttpConfig:
        if not isinstance(raw, dict):
            raise ValidationError("Connector settings must be a JSON object.")
        unknown = set(raw) - {"base_url", "timeout", "connect_timeout", "health_path"}
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
        return cls(base_url=base_url.rstrip("/"), health_path=health_path, **timeouts)
