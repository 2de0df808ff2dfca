"""Gatehouse's problem+json refusals as exceptions: one class per kind of answer, the stable `code` on each."""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class GatehouseError(Exception):
    """Gatehouse refused the call, or could not be reached.

    `code` is one of CONTRACT.md's codes (`scope_denied`, `invalid_payload`, …); `status` the HTTP status (0 when
    no answer came back); `detail` the sentence for a person; `errors` maps field paths to messages, when given;
    `url` the URL that was called, which the message names ("http://…/api/v1/me answered 401: …").
    Catch a subclass for a kind of refusal, or compare `code` for one in particular.
    """

    def __init__(
        self,
        code: str,
        status: int,
        detail: str,
        errors: dict[str, str] | None = None,
        *,
        title: str = "",
        retry_after: float | None = None,
        url: str = "",
    ) -> None:
        if not url:
            message = f"{status} {code}: {detail}"
        elif status:
            message = f"{url} answered {status}: {detail} ({code})"
        else:
            message = f"{url} did not answer: {detail}"
        super().__init__(message)
        self.code = code
        self.status = status
        self.detail = detail
        self.errors = errors or {}
        self.title = title
        self.retry_after = retry_after  # seconds, from the Retry-After header when there was one
        self.url = url


class Unauthenticated(GatehouseError):
    """401 `unauthenticated`: no token, or one that is unknown, expired or revoked."""


class Forbidden(GatehouseError):
    """403 `scope_denied` (outside the agent's grants) or `agent_disabled` (a kill switch stopped the agent)."""


class NotFound(GatehouseError):
    """404 `not_found`: no such record, system or proposal (another agent's proposal looks the same)."""


class Conflict(GatehouseError):
    """409 `idempotency_conflict` (a key reused for another request), `invalid_state` (e.g. cancel too late) or
    `action_paused` (the action's tool changed on its MCP server; a person must approve it first)."""


class InvalidRequest(GatehouseError):
    """400 `malformed_request`, 413 `payload_too_large`, 422 `invalid_payload` or `unknown_action`."""


class Throttled(GatehouseError):
    """429 `throttled`: too many calls; `retry_after` says when to try again."""


class Unavailable(GatehouseError):
    """503 `system_unavailable` (the system behind Gatehouse is down), `database_unavailable` (Gatehouse's own
    database connection was lost; nothing was saved) or `system_frozen` (a kill switch)."""


class ConnectionFailed(GatehouseError):
    """No answer from Gatehouse (refused connection, timeout): `status` is 0 and `code` is `connection_failed`."""


_BY_CODE: dict[str, type[GatehouseError]] = {
    "unauthenticated": Unauthenticated,
    "scope_denied": Forbidden,
    "agent_disabled": Forbidden,
    "not_found": NotFound,
    "idempotency_conflict": Conflict,
    "invalid_state": Conflict,
    "action_paused": Conflict,
    "malformed_request": InvalidRequest,
    "payload_too_large": InvalidRequest,
    "invalid_payload": InvalidRequest,
    "unknown_action": InvalidRequest,
    "throttled": Throttled,
    "system_frozen": Unavailable,
    "system_unavailable": Unavailable,
    "database_unavailable": Unavailable,
}
# For answers without a known code (a proxy's HTML 502, a code added to the contract after this client).
_BY_STATUS: dict[int, type[GatehouseError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: Throttled,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now: a number of seconds or an HTTP date (RFC 9110); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(response: httpx.Response) -> GatehouseError:
    """The exception for a non-2xx answer, parsed from its problem+json body when it has one."""
    body: Any = None
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    status = response.status_code
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        code = body["code"]
        detail = str(body.get("detail") or body.get("title") or "")
        title = str(body.get("title") or "")
        raw_errors = body.get("errors")
        errors = {str(k): str(v) for k, v in raw_errors.items()} if isinstance(raw_errors, dict) else {}
    else:
        code, title, errors = f"http_{status}", response.reason_phrase, {}
        detail = response.text[:300].strip() or response.reason_phrase
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status, GatehouseError)
    try:
        url = str(response.request.url)
    except RuntimeError:  # a response made by hand, without the request it answers
        url = ""
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    return cls(code, status, detail, errors, title=title, retry_after=retry_after, url=url)
