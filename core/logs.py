"""Log lines as JSON (GATEHOUSE_LOG_FORMAT=json), carrying the request id that the audit events of the same request
hold, in Celery tasks the task's id, and with tracing on the trace and span ids, so a log search, the audit trail and
the traces meet on one id.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from celery import current_task

from core.env import env_choice
from core.request_context import current_request_id
from core.tracing import current_ids

LOG_FORMATS = ("plain", "json")

# What every LogRecord carries; anything else on a record came from `extra=` and is written as a field of its own.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def log_format() -> str:
    """`plain` (the default, for a person at a terminal) or `json` (one object a line, for a log pipeline)."""
    return env_choice("GATEHOUSE_LOG_FORMAT", "plain", LOG_FORMATS)


def _current_task() -> tuple[str, str] | None:
    """(id, name) of the Celery task this thread runs, if any."""
    task = current_task._get_current_object()
    if task is None or getattr(task.request, "id", None) is None:
        return None
    return task.request.id, task.name


def _request_id(record: logging.LogRecord) -> str | None:
    # django.request logs its 4xx/5xx lines after the middleware has let go of the request id: the request has it.
    request = getattr(record, "request", None)
    return getattr(record, "request_id", None) or current_request_id() or getattr(request, "request_id", None)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: timestamp (UTC, ISO 8601), level, logger, message, request_id, and where they apply
    task_id and task_name, trace_id and span_id (tracing on, inside a span), the exception, and the fields passed
    with `extra=`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": _request_id(record),
        }
        task = _current_task()
        if task is not None:
            entry["task_id"], entry["task_name"] = task
        trace_id, span_id = current_ids()
        if trace_id:
            entry["trace_id"], entry["span_id"] = trace_id, span_id
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class AgentApiAnswers(logging.Filter):
    """Drops django.request's line for a 4xx answer of the agent API (/api/), on the plain (terminal) log.

    Such an answer is the API working: a refusal with a stable code that the agent reads (problem+json), counted in
    /metrics by status, and for a refused proposal an audit event. A WARNING line for each would only repeat it, and
    let one agent that keeps getting a call wrong fill the terminal. The admin's 4xx and every 5xx are still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "django.request":
            return True
        status = getattr(record, "status_code", None) or 0
        path = getattr(getattr(record, "request", None), "path", "")
        return not (400 <= status < 500 and path.startswith("/api/"))
