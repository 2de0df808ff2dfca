"""Refusals every door reports the same way: the API as problem+json, MCP as tool errors, commands as messages."""

from __future__ import annotations

from typing import Any


class GatehouseError(Exception):
    """A refusal with a stable code from CONTRACT.md and the HTTP status that goes with it."""

    status = 400
    code = "malformed_request"
    title = "Bad request"

    def __init__(self, detail: str, *, errors: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class MalformedRequest(GatehouseError):
    status, code, title = 400, "malformed_request", "Malformed request"


class Unauthenticated(GatehouseError):
    status, code, title = 401, "unauthenticated", "Not authenticated"


class ScopeDenied(GatehouseError):
    status, code, title = 403, "scope_denied", "Not within the agent's grants"


class AgentDisabled(GatehouseError):
    status, code, title = 403, "agent_disabled", "Agent disabled"


class NotFound(GatehouseError):
    status, code, title = 404, "not_found", "Not found"


class IdempotencyConflict(GatehouseError):
    status, code, title = 409, "idempotency_conflict", "Idempotency key reused with a different request"


class InvalidState(GatehouseError):
    status, code, title = 409, "invalid_state", "Not possible in the current state"


class ActionPaused(GatehouseError):
    """The action is paused until a person acts: its MCP tool's definition changed on the server (tool pinning)."""

    status, code, title = 409, "action_paused", "Action paused"


class PayloadTooLarge(GatehouseError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class InvalidPayload(GatehouseError):
    status, code, title = 422, "invalid_payload", "Invalid payload"


class UnknownAction(GatehouseError):
    status, code, title = 422, "unknown_action", "Unknown action"


class Throttled(GatehouseError):
    status, code, title = 429, "throttled", "Too many requests"


class SystemFrozen(GatehouseError):
    status, code, title = 503, "system_frozen", "Writes are frozen"


class SystemUnavailable(GatehouseError):
    status, code, title = 503, "system_unavailable", "System unavailable"


class DatabaseUnavailable(GatehouseError):
    """Gatehouse's own database was lost mid-request: the transaction rolled back, so a retry is safe."""

    status, code, title = 503, "database_unavailable", "Database unavailable"
