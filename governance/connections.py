"""What the inventory asks of connector kinds without importing them: are these settings, this operation, usable?

A system stores its connector's settings and an action its `operation`, but only the connector kinds (connectors/,
one room up) know what those mean. So that saving a system or an action still refuses what no connector could use,
the connectors app registers its checks here when Django starts (connectors/apps.py), the usual way for a lower layer
to call code above it. Until a checker is registered every check refuses: fail closed.
"""

from __future__ import annotations

from typing import Any, Protocol

from django.core.exceptions import ValidationError


class ConnectionChecks(Protocol):
    def settings_errors(self, kind: str, config: Any) -> list[str]:
        """What is wrong with a system's connector settings for `kind`; [] when a connector can use them."""

    def operation_errors(self, kind: str, operation: Any, compensation: str) -> dict[str, str]:
        """Field name → what is wrong with an action's `operation` and `compensation` for `kind`; {} when usable."""


_checks: ConnectionChecks | None = None


def register(checks: ConnectionChecks) -> None:
    global _checks
    _checks = checks


def _registered() -> ConnectionChecks:
    if _checks is None:
        raise ValidationError("No connector kinds are installed: the connectors app must be in INSTALLED_APPS.")
    return _checks


def settings_errors(kind: str, config: Any) -> list[str]:
    return _registered().settings_errors(kind, config)


def operation_errors(kind: str, operation: Any, compensation: str) -> dict[str, str]:
    return _registered().operation_errors(kind, operation, compensation)
