"""Which connector class serves a system, with its secret taken from the vault at the moment of use."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.utils.module_loading import import_string

from connectors.base import Connector, PermanentError
from connectors.limits import guarded
from connectors.models import credential_for

# Each kind of system, once: its connector class and the parser that validates its settings, by import path so
# loading the registry loads no connector (zeep, the MCP SDK) until a system of that kind is used or saved.
KINDS: dict[str, tuple[str, str]] = {
    "http": ("connectors.http.connector.HttpConnector", "connectors.http.config.HttpConfig"),
    "mcp": ("connectors.mcp.connector.McpConnector", "connectors.mcp.config.McpConfig"),
    "soap": ("connectors.soap.connector.SoapConnector", "connectors.soap.config.SoapConfig"),
    "legacy_batch": (
        "connectors.legacy_batch.connector.LegacyBatchConnector",
        "connectors.legacy_batch.config.LegacyBatchConfig",
    ),
}


def validate_config(kind: str, raw: Any) -> None:
    """Check a system's connector settings when it is saved; raises ValidationError saying what is wrong."""
    if kind not in KINDS:
        raise ValidationError(f"No connector for kind {kind!r}.")
    import_string(KINDS[kind][1]).parse(raw)


class Checks:
    """The connector kinds' answers to the inventory's questions (governance.connections), registered at start."""

    def settings_errors(self, kind: str, config: Any) -> list[str]:
        try:
            validate_config(kind, config)
        except ValidationError as exc:
            return exc.messages
        return []

    def operation_errors(self, kind: str, operation: Any, compensation: str) -> dict[str, str]:
        if kind not in OPERATIONS:
            return {}  # the kind reads `operation` when it runs the action (http, mcp) or has no actions
        return import_string(OPERATIONS[kind])(operation, compensation)


# Kinds that check an action's `operation` when the action is saved: a function (operation, compensation) → errors.
OPERATIONS: dict[str, str] = {"soap": "connectors.soap.config.operation_errors"}


def connector_for(system, *, agent=None, secret: str | None = None, vaulted=None) -> Connector:
    """A connector for `system`, acting for `agent` when given; the secret is decrypted here and lives only inside
    the connector object.

    The secret is the agent's own credential at the system when it has one (so the system's own logs name it), else
    the system's shared one (connectors.models.credential_for). `secret` replaces the vaulted one, sent as `vaulted`
    says (default: the shared credential): a rotation checks the new secret before it is stored.
    """
    try:
        cls = import_string(KINDS[system.connector_kind][0])
    except KeyError:
        raise PermanentError(f"No connector for kind {system.connector_kind!r} yet.") from None
    if secret is None:
        vaulted = credential_for(system, agent)
        secret = vaulted.reveal() if vaulted is not None else None
    try:
        connector = cls(system, secret, vaulted)
    except ValidationError as exc:  # settings saved without full_clean(): no call could succeed, so no retry either
        raise PermanentError(f"{system.slug}: connector settings: {' '.join(exc.messages)}") from None
    return guarded(connector)  # every kind behind the system's rate limit and circuit breaker
