"""What the terminal log says about answers: an agent API 4xx is not a WARNING line each; the admin's 4xx, every 5xx
and every other logger's lines still are."""

from __future__ import annotations

import logging

import pytest
from django.test import RequestFactory

from core.logs import AgentApiAnswers


def console_filters() -> list[logging.Filter]:
    (handler,) = [h for h in logging.getLogger().handlers if h.name == "console"]  # LOGGING's (the suite logs plain)
    return [f for f in handler.filters if isinstance(f, logging.Filter)]


def shown(path: str, status: int, logger: str = "django.request") -> bool:
    """Whether this answer's line passes the console handler's filters."""
    record = logging.LogRecord(logger, logging.WARNING, __file__, 0, "%s: %s", ("Forbidden", path), None)
    record.status_code = status
    record.request = RequestFactory().get(path)
    return all(f.filter(record) for f in console_filters())


def test_the_plain_console_handler_carries_the_agent_api_filter():
    assert any(isinstance(f, AgentApiAnswers) for f in console_filters())


@pytest.mark.parametrize(
    ("path", "status", "logger", "kept"),
    [
        ("/api/v1/proposals", 403, "django.request", False),  # a refusal: the agent's answer, audited and counted
        ("/api/v1/me", 401, "django.request", False),
        ("/api/v1/proposals", 500, "django.request", True),  # a fault
        ("/api/v1/me", 503, "django.request", True),
        ("/admin/approvals/proposal/", 403, "django.request", True),  # a person's page
        ("/api/v1/me", 401, "tests.other", True),  # another logger's line is not judged
    ],
)
def test_only_the_agent_apis_4xx_lines_of_django_request_are_left_out(path, status, logger, kept):
    assert shown(path, status, logger) is kept
