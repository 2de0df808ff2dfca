"""The connector contract: every kind of system is read, written and compensated through these five methods."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any


class ConnectorError(Exception):
    """A call to a system failed.

    The message is passed on as it is (agents' problem details, failure reasons, audit summaries, e-mails), so it
    never quotes what the system answered: connectors build it with `connectors.errors.downstream_error`, which logs
    the system's own words under `reference` with the credential redacted.
    """

    reference: str = ""  # the id of the log line holding the detail; empty for Gatehouse's own refusals


class TransientError(ConnectorError):
    """Worth retrying: a timeout, a refused connection, 429 or 5xx. `retry_after` is the system's own hint."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """Retrying cannot help: the system refused the request itself (4xx other than 429), or the mapping is wrong."""


class RecordNotFound(PermanentError):
    """The record does not exist in the system."""


class NotReversible(PermanentError):
    """The action has no compensation."""


class ToolChanged(PermanentError):
    """An MCP tool's live definition is not the one pinned for the action: nothing was called (tool pinning).
    `definition` is what the server offers now, None when it no longer lists the tool."""

    def __init__(self, message: str, *, tool: str, definition: dict | None) -> None:
        super().__init__(message)
        self.tool = tool
        self.definition = definition


class RecordChanged(PermanentError):
    """A conditional write was refused: the record changed since it was read (HTTP 409). Nothing was overwritten."""


@dataclass(frozen=True)
class Result:
    """What a write did: the record's relevant state before and after, and what is needed to undo it."""

    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    compensation: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False  # the system recognised the idempotency key: the write had already been applied


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str = ""


class Connector:
    """One system, reached with its vaulted credential. Subclasses implement the kind-specific calls."""

    def __init__(self, system, secret: str | None, vaulted=None) -> None:
        self.system = system
        self._secret = secret
        self._vaulted = vaulted  # the Credential or AgentCredential the secret is from: how it is sent

    def auth_headers(self) -> dict[str, str]:
        """The vaulted secret as its credential says to send it over HTTP: a named header, Basic, or Bearer."""
        credential = self._vaulted if self._vaulted is not None else getattr(self.system, "credential", None)
        if self._secret is None or credential is None:
            return {}
        if credential.kind == "header":
            return {credential.header_name: self._secret}
        if credential.kind == "basic":
            pair = f"{credential.username}:{self._secret}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {"Authorization": f"Bearer {self._secret}"}

    def credential_texts(self) -> list[str]:
        """The vaulted secret and each header value made from it: what a log line must never show."""
        if not self._secret:
            return []
        return [self._secret, *self.auth_headers().values()]

    def read(self, resource: str, record_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def execute(
        self,
        action,
        record_id: str,
        payload: dict[str, Any],
        idempotency_key: str,
        *,
        expected: dict[str, Any] | None = None,
    ) -> Result:
        """Make the write. `expected` is the record as the caller read it just before (approvals/freshness.py): a
        connector whose system can make the write conditional on it (a version the system checks) does, and raises
        RecordChanged when it moved on; one that reads the record before writing uses it instead of reading again."""
        raise NotImplementedError

    def compensate(
        self,
        action,
        record_id: str,
        compensation: dict[str, Any],
        idempotency_key: str,
        *,
        expected: dict[str, Any] | None = None,
    ) -> Result:
        """Undo a write. `expected` is the record as the caller read it just before: a connector whose system can make
        the write conditional on it (a version the system checks) does, and raises RecordChanged when it changed."""
        raise NotReversible(f"{action} cannot be reversed: {action.not_reversible_note}")

    def health(self) -> Health:
        raise NotImplementedError
