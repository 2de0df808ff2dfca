"""Every API error as application/problem+json (RFC 9457) with a stable `code` from CONTRACT.md."""

from __future__ import annotations

from typing import Any

from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.database import RETRY_AFTER_SECONDS, is_database_unavailable, log_database_unavailable
from core.errors import DatabaseUnavailable, GatehouseError

PROBLEM_CONTENT_TYPE = "application/problem+json"
_TYPE_BASE = "urn:gatehouse:problem:"


def problem(*, status: int, code: str, title: str, detail: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": _TYPE_BASE + code, "title": title, "status": status, "detail": detail, "code": code}
    if errors:
        body["errors"] = errors
    return body


def flatten_errors(errors: Any, prefix: str = "") -> dict[str, str]:
    """DRF's nested error lists → {"payload.credit_limit": "message"}."""
    flat: dict[str, str] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = "" if key in ("non_field_errors", "detail") else str(key)
            flat.update(flatten_errors(value, f"{prefix}.{name}".strip(".") if name else prefix))
    elif isinstance(errors, list):
        if all(not isinstance(item, dict | list) for item in errors):
            flat[prefix or "request"] = " ".join(str(item) for item in errors)
        else:
            for index, item in enumerate(errors):
                flat.update(flatten_errors(item, f"{prefix}.{index}".strip(".")))
    else:
        flat[prefix or "request"] = str(errors)
    return flat


def _from_drf(exc: drf.APIException) -> tuple[int, str, str, str, dict[str, str] | None]:
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        return 401, "unauthenticated", "Not authenticated", "A valid bearer token is required.", None
    if isinstance(exc, drf.ValidationError):
        return 422, "invalid_payload", "Invalid payload", "The request has invalid fields.", flatten_errors(exc.detail)
    if isinstance(exc, drf.ParseError | drf.UnsupportedMediaType):
        return 400, "malformed_request", "Malformed request", str(exc.detail), None
    if isinstance(exc, drf.NotFound):
        return 404, "not_found", "Not found", str(exc.detail), None
    if isinstance(exc, drf.Throttled):
        return 429, "throttled", "Too many requests", str(exc.detail), None
    if isinstance(exc, drf.PermissionDenied):
        return 403, "scope_denied", "Not allowed", str(exc.detail), None
    if isinstance(exc, drf.MethodNotAllowed):
        return 405, "method_not_allowed", "Method not allowed", str(exc.detail), None
    if isinstance(exc, drf.NotAcceptable):
        return 406, "not_acceptable", "Not acceptable", str(exc.detail), None
    return exc.status_code, "malformed_request", "Request refused", str(exc.detail), None


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: map our refusals, DRF's own and a lost database to problem+json; anything else stays
    a 500."""
    headers: dict[str, str] = {}
    if is_database_unavailable(exc):
        log_database_unavailable(context["request"], exc)
        exc = database_unavailable_error()
    if isinstance(exc, GatehouseError):
        status, code, title, detail, errors = exc.status, exc.code, exc.title, exc.detail, exc.errors
        headers.update(exc.headers)
    elif isinstance(exc, Http404):
        status, code, title, detail, errors = 404, "not_found", "Not found", "No such object.", None
    elif isinstance(exc, drf.APIException):
        response = drf_exception_handler(exc, context)  # keeps WWW-Authenticate and Retry-After
        if response is not None:
            headers.update({key: value for key, value in response.items() if key != "Content-Type"})
        status, code, title, detail, errors = _from_drf(exc)
        if status == 401 and "WWW-Authenticate" not in headers:
            headers["WWW-Authenticate"] = 'Bearer realm="gatehouse"'
    else:
        return None
    body = problem(status=status, code=code, title=title, detail=detail, errors=errors)
    return Response(body, status=status, headers=headers, content_type=PROBLEM_CONTENT_TYPE)


def database_unavailable_error() -> DatabaseUnavailable:
    """The refusal for a lost database connection, as the API and the MCP tools answer it."""
    return DatabaseUnavailable(
        "Gatehouse lost (or could not get) its database connection while handling this request; nothing was "
        "half-saved. Try again (a proposal with the same Idempotency-Key, so a retry never makes a second one).",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def database_unavailable_response() -> JsonResponse:
    """The same 503 for API paths outside DRF (governance/database_errors.py's middleware)."""
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
