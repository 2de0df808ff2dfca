"""Django work off the MCP endpoint's event loop: ORM queries and connector calls run in worker threads, framed as
Django frames a request, under the call's request id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from core.request_context import bound_request_id
from governance import policy_cache

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], /, *args: Any) -> T:
    """Run ORM work (and connector calls) in a worker thread, framed as Django frames a request.

    thread_sensitive=False: outside Django's request handler there is no per-request thread, and thread_sensitive
    would funnel every MCP call of the process, slow connector reads included, through one shared thread. Each unit
    of work here is self-contained (its transactions begin and end inside it), so any pool thread will do; stale
    connections are dropped before and after, as Django's request_started/request_finished signals do.
    """
    return await sync_to_async(_framed(fn), thread_sensitive=False)(*args)


def _framed(fn: Callable[..., T]) -> Callable[..., T]:
    def run(*args: Any) -> T:
        close_old_connections()
        try:
            return fn(*args)
        finally:
            close_old_connections()

    return run


def with_request_id(request_id: str, fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` run under the call's request id, its lookups answered from one policy-cache scope."""

    def run(*args: Any) -> T:
        with bound_request_id(request_id):
            # The call's lookups answer from this process's policy cache under the generation read now (the token
            # was checked in another thread, before the request id existed).
            policy_cache.open_scope()
            return fn(*args)

    return run
