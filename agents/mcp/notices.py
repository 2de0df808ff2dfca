"""What the MCP endpoint tells a client while a call runs: log messages (the logging capability) and progress.

Both ride the response of the call they belong to: the POST's answer becomes an event stream with the first of them
(agents.mcp.streams). The endpoint is stateless, so nothing is ever sent outside a call.

Which log levels a call is sent, statelessly. `logging/setLevel` is answered (`{}`) but there is no session for it to
set: every POST is self-contained and may reach any web process. So the level is the call's own: the
`io.modelcontextprotocol/logLevel` key of its `_meta` (the protocol's per-request opt-in since 2026-07-28, honoured
here at every protocol version), else GATEHOUSE_MCP_LOG_LEVEL; at 2026-07-28 and later, a call without the key is sent
no log messages at all, as that revision requires.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast, get_args

import anyio
import mcp_types as types
from django.conf import settings
from mcp.server.connection import allowed_log_levels
from mcp.server.context import ServerRequestContext
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from agents.mcp import streams

logger = logging.getLogger(__name__)

T = TypeVar("T")
LEVELS: tuple[types.LoggingLevel, ...] = get_args(types.LoggingLevel)
LOGGER = "gatehouse"


def log_levels(ctx: ServerRequestContext[Any, Any]) -> frozenset[str]:
    """The log levels this call may be sent (see the module's docstring)."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return cast(frozenset[str], allowed_log_levels(ctx.protocol_version, ctx.meta))  # the SDK's own rule
    requested = (ctx.meta or {}).get(types.LOG_LEVEL_META_KEY)
    level = requested if requested in LEVELS else settings.GATEHOUSE_MCP_LOG_LEVEL
    return frozenset(LEVELS[LEVELS.index(level) :])


async def log(ctx: ServerRequestContext[Any, Any], level: types.LoggingLevel, message: str, **data: Any) -> None:
    """Send one log message on this call's response, if its level is wanted; a client gone is no error."""
    if level in log_levels(ctx):
        params = {"level": level, "logger": LOGGER, "data": {"message": message, **data}}
        await _notify("notifications/message", params)


async def progress(ctx: ServerRequestContext[Any, Any], done: float, total: float, message: str) -> None:
    """A progress notification for this call, when its `_meta` carried a progressToken (nothing otherwise)."""
    token = progress_token_from_params(ctx.params)
    if token is not None:
        params = {"progressToken": token, "progress": done, "total": total, "message": message}
        await _notify("notifications/progress", params)


async def _notify(method: str, params: dict[str, Any]) -> None:
    try:
        await streams.notify(method, params)
    except Exception:  # the call goes on whether or not the client hears this
        logger.debug("mcp: %s not sent", method, exc_info=True)


async def noticed(ctx: ServerRequestContext[Any, Any], what: str, work: Callable[[], Awaitable[T]], **data: Any) -> T:
    """`work`'s result; when it runs past GATEHOUSE_MCP_SLOW_CALL (a slow system, a settle wait) the client is told
    so at once (`notice`), and how long it took once done (`info`). A quick call costs one timer and sends nothing."""
    after = settings.GATEHOUSE_MCP_SLOW_CALL.total_seconds()
    started = anyio.current_time()

    async def watch() -> None:
        await anyio.sleep(after)
        await log(ctx, "notice", f"{what} is taking longer than {after:g} s; still working.", **data)

    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            result = await work()
        except Exception as exc:  # raised below as itself: inside the group it would come out as an ExceptionGroup
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    took = anyio.current_time() - started
    if took >= after:
        await log(ctx, "info", f"{what} took {took:.1f} s.", **data)
    return result
