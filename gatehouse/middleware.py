"""The project's own middleware: the request id around everything, a lost database answered as a clear 503, and how
the person behind a request signed in, for the audit trail."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from core.database import RETRY_AFTER_SECONDS, is_database_unavailable, log_database_unavailable
from core.problems import database_unavailable_response
from core.request_context import new_request_id, request_id_set, sign_in_set

# Where a session keeps how its person signed in: {"method": "oidc", "issuer": …} (gatehouse/oidc.py) or
# {"method": "password"} (gatehouse/admin_site.py). A session made any other way (a test's force_login) has none.
SIGN_IN_SESSION_KEY = "gatehouse_sign_in"


class RequestIdMiddleware:
    """Sets the request id for the duration of a request and echoes it in the X-Request-ID header."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = new_request_id(request.headers.get("X-Request-ID"))
        request.request_id = request_id  # type: ignore[attr-defined]
        with request_id_set(request_id):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


class DatabaseUnavailableMiddleware:
    """A view's lost database connection → 503 with Retry-After: an HTML page for people, problem+json for the API.

    The page is rendered without a request context: the context processors would ask the database for the user.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_database_unavailable(exception):
            return None
        log_database_unavailable(request, exception)
        if request.path.startswith("/api/"):
            return database_unavailable_response()
        html = render_to_string(
            "database_unavailable.html",
            {"retry_after": RETRY_AFTER_SECONDS, "request_id": getattr(request, "request_id", "")},
        )
        return HttpResponse(html, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


class SignInMiddleware:
    """Makes the session's sign-in method known to audit_record for the request (core.request_context).

    Read from the session alone (its user id and method), without loading the user: a request without a session
    cookie (every agent call) costs nothing. audit_record uses it only for events whose acting person is the session's
    own user (core.request_context.current_sign_in).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        if session is None or not request.COOKIES.get(settings.SESSION_COOKIE_NAME):
            return self.get_response(request)
        sign_in, user_id = session.get(SIGN_IN_SESSION_KEY), session.get(SESSION_KEY)
        if not isinstance(sign_in, dict) or user_id is None:
            return self.get_response(request)
        with sign_in_set(int(user_id), {str(k): str(v) for k, v in sign_in.items()}):
            return self.get_response(request)
