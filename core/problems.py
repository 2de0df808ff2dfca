"""Problem details (RFC 9457) for every door: the body, the media type, and the answer to a lost database."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

from core.database import RETRY_AFTER_SECONDS
from core.errors import DatabaseUnavailable

PROBLEM_CONTENT_TYPE = "application/problem+json"
_TYPE_BASE = "urn:gatehouse:problem:"


def problem(*, status: int, code: str, title: str, detail: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": _TYPE_BASE + code, "title": title, "status": status, "detail": detail, "code": code}
    if errors:
        body["errors"] = errors
    return body


def database_unavailable_error() -> DatabaseUnavailable:
    """The refusal for a lost database connection, as the API and the MCP tools answer it."""
    return DatabaseUnavailable(
        "Gatehouse lost (or could not get) its database connection while handling this request; nothing was "
        "half-saved. Try again (a proposal with the same Idempotency-Key, so a retry never makes a second one).",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def database_unavailable_response() -> JsonResponse:
    """The same 503 for API paths outside DRF (gatehouse/middleware.py)."""
    exc = database_unavailable_error()
    response = problem_response(status=exc.status, code=exc.code, title=exc.title, detail=exc.detail)
    for name, value in exc.headers.items():
        response[name] = value
    return response


def problem_response(*, status: int, code: str, title: str, detail: str) -> JsonResponse:
    """The same body outside DRF (Django's 404/500 handlers for API paths, middleware refusals)."""
    return JsonResponse(
        problem(status=status, code=code, title=title, detail=detail), status=status, content_type=PROBLEM_CONTENT_TYPE
    )
