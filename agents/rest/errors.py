"""Every API error as application/problem+json (RFC 9457) with a stable `code` from CONTRACT.md."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from agents.shapes import flatten_errors
from core.database import is_database_unavailable, log_database_unavailable
from core.errors import GatehouseError
from core.problems import PROBLEM_CONTENT_TYPE, database_unavailable_error, problem


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
