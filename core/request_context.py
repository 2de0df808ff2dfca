"""The request id of the work in progress, so audit events and logs name the request that caused them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_request_id: ContextVar[str] = ContextVar("gatehouse_request_id", default="")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def current_request_id() -> str:
    return _request_id.get()


@contextmanager
def request_id_set(request_id: str) -> Iterator[None]:
    """The request id of one request, set by the middleware (gatehouse.middleware) for its duration."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


@contextmanager
def bound_request_id(request_id: str) -> Iterator[str]:
    """Make `request_id` the current one for a block of work outside Django's middleware (the MCP endpoint)."""
    token = _request_id.set(request_id)
    try:
        yield request_id
    finally:
        _request_id.reset(token)


def new_request_id(incoming: str | None = None) -> str:
    """Keep a caller's X-Request-ID when it is a harmless token; otherwise make one."""
    if incoming and _SAFE_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex
