"""The request id of the work in progress, so audit events and logs name the request that caused them."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_request_id: ContextVar[str] = ContextVar("gatehouse_request_id", default="")
# A number drawn for each request (each block of work with a request id), never reused by this process: unlike the
# request id, which a caller may choose (X-Request-ID), it tells one request from the next for certain.
_request_serial: ContextVar[int] = ContextVar("gatehouse_request_serial", default=0)
_serials = itertools.count(1)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def current_request_id() -> str:
    return _request_id.get()


def current_request_serial() -> int:
    """This request's number in this process (0: no request), for what must last exactly one request."""
    return _request_serial.get()


@contextmanager
def request_id_set(request_id: str) -> Iterator[None]:
    """The request id of one request, set by the middleware (gatehouse.middleware) for its duration."""
    token, serial = _request_id.set(request_id), _request_serial.set(next(_serials))
    try:
        yield
    finally:
        _request_serial.reset(serial)
        _request_id.reset(token)


@contextmanager
def bound_request_id(request_id: str) -> Iterator[str]:
    """Make `request_id` the current one for a block of work outside Django's middleware (the MCP endpoint)."""
    token, serial = _request_id.set(request_id), _request_serial.set(next(_serials))
    try:
        yield request_id
    finally:
        _request_serial.reset(serial)
        _request_id.reset(token)


def new_request_id(incoming: str | None = None) -> str:
    """Keep a caller's X-Request-ID when it is a harmless token; otherwise make one."""
    if incoming and _SAFE_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex


# How the person behind this request signed in ({"method": "oidc", "issuer": …} or {"method": "password"}) and who
# they are (the user id the session holds): audit_record names the method in the events that person's own actions
# write, so an approval says it was made in a session opened through the company's identity provider.
_sign_in: ContextVar[tuple[int, dict[str, str]] | None] = ContextVar("gatehouse_sign_in", default=None)


def current_sign_in(user_id: int | None) -> dict[str, str] | None:
    """How `user_id` signed in for this request, when the request is theirs and the session says; else None."""
    held = _sign_in.get()
    if held is None or user_id is None or held[0] != user_id:
        return None
    return dict(held[1])


@contextmanager
def sign_in_set(user_id: int, sign_in: dict[str, str]) -> Iterator[None]:
    """The session's sign-in for the duration of one request (gatehouse.middleware.SignInMiddleware)."""
    token = _sign_in.set((user_id, dict(sign_in)))
    try:
        yield
    finally:
        _sign_in.reset(token)
