"""Slack's Web API, through the official SDK (slack_sdk.WebClient) at GATEHOUSE_SLACK_API_URL.

One call, one attempt: the SDK's own retry handlers are off, so a retry is always the Celery task's, with backoff and
a bound, and a message is never posted twice by two layers retrying the same call. Failures are sorted into
SlackUnavailable (an outage, a rate limit: try again later) and SlackRefused (Slack said no: invalid_auth,
users_not_found, channel_not_found…), each carrying Slack's error code only. The SDK puts the token in a header and
redacts it from its own debug log; nothing here repeats a request or Slack's answer whole.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.conf import settings
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

logger = logging.getLogger(__name__)

TIMEOUT = 5  # seconds: a click must be answered within Slack's 3 s, and a task must not hold a worker long

# Slack's error codes that mean "not now" rather than "no" (Slack's Web API docs, each method's Errors table).
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


class SlackUnavailable(Exception):
    """Slack could not be reached or asked us to come back later; `retry_after` in seconds when it said."""

    def __init__(self, code: str, retry_after: float | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.retry_after = retry_after


class SlackRefused(Exception):
    """Slack answered with an error that a retry would not change; `code` is Slack's error code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def web_client() -> WebClient:
    return WebClient(
        token=settings.GATEHOUSE_SLACK_BOT_TOKEN,
        base_url=settings.GATEHOUSE_SLACK_API_URL,
        timeout=TIMEOUT,
        retry_handlers=[],
    )


# Methods whose arguments go as JSON (they carry blocks or a view); the others take a form, as Slack's reference says
# users.info does (JSON bodies are not accepted by every read method).
JSON_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral", "views.open"})


def slack_call(method: str, **params: Any) -> dict[str, Any]:
    """Call Web API `method` (e.g. "chat.postMessage") with `params`; Slack's answer when it says ok."""
    client = web_client()
    try:
        if method in JSON_METHODS:
            response = client.api_call(method, json=params)
        else:
            response = client.api_call(method, data=params)
    except SlackApiError as exc:
        raise _sorted(exc) from None
    except (SlackClientError, OSError, ValueError) as exc:  # refused connection, timeout, a body that is not JSON
        raise SlackUnavailable(type(exc).__name__) from None
    data = response.data if isinstance(response.data, dict) else {}
    return data


_CODE = re.compile(r"[a-z0-9_.]{1,100}")


def _sorted(exc: SlackApiError) -> SlackUnavailable | SlackRefused:
    response = exc.response
    status = getattr(response, "status_code", 0) or 0
    data = response.data if isinstance(getattr(response, "data", None), dict) else {}
    error = str(data.get("error") or "")
    code = error if _CODE.fullmatch(error) else f"http_{status}"  # an unreadable body: its status, not its text
    if status == 429 or status >= 500 or code in TRANSIENT_ERRORS:
        retry_after = (getattr(response, "headers", None) or {}).get("Retry-After") or (
            getattr(response, "headers", None) or {}
        ).get("retry-after")
        try:
            seconds = float(retry_after) if retry_after is not None else None
        except ValueError:
            seconds = None
        return SlackUnavailable(code, seconds)
    return SlackRefused(code)
