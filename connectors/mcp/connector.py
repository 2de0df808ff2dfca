"""A downstream MCP server as a Gatehouse system: its read-only tools serve reads, its other tools are actions.

Each call is one request on a live session with the server (a stdio subprocess, or streamable HTTP) that this process
keeps open between calls (connectors.mcp.sessions: per system and credential, reconnected when it died, never resending
a write that may have reached the server), all under the system's timeout: a server that hangs or dies mid-call fails
the call with a clear error and leaves the worker free.

An action's `operation`:

```json
{"tool": "add_observations",
 "arguments": {"observations": [{"entityName": "{record_id}", "contents": "{payload.contents}"}]},
 "compensate": {"tool": "delete_observations",
                "arguments": {"deletions": [{"entityName": "{record_id}", "observations": "{payload.contents}"}]}}}
```

Without `arguments` the payload is passed to the tool as is (the payload schema is the tool's input schema). The
compensation is rendered with the proposal's values when the write executes and kept with the proposal, so a reversal
calls exactly that. MCP has no idempotency key: Gatehouse sends the proposal id in the request's `_meta`
(`io.gatehouse/idempotency-key`) for servers that honour it; tools that are not idempotent should be marked so by
the business owner (the reference memory server's writes are: a second create of the same entity changes nothing).
"""

from __future__ import annotations

import functools
import json
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from connectors.base import (
    Connector,
    Health,
    PermanentError,
    RecordNotFound,
    Result,
    ToolChanged,
    TransientError,
)
from connectors.errors import downstream_error
from connectors.mcp import sessions
from connectors.mcp.config import McpConfig
from connectors.mcp.digest import definition_digest, tool_definition
from connectors.mcp.sessions import SessionKey

T = TypeVar("T")
IDEMPOTENCY_META = "io.gatehouse/idempotency-key"


def render(template: Any, *, record_id: str, payload: dict[str, Any]) -> Any:
    """Fill a JSON template: "{record_id}", "{payload}" and "{payload.name}" become values, not text."""
    if isinstance(template, str):
        if template == "{record_id}":
            return record_id
        if template == "{payload}":
            return payload
        if template.startswith("{payload.") and template.endswith("}"):
            return payload.get(template[len("{payload.") : -1])
        return template.replace("{record_id}", record_id)
    if isinstance(template, dict):
        return {key: render(value, record_id=record_id, payload=payload) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, record_id=record_id, payload=payload) for value in template]
    return template


def _at_path(value: Any, path: str) -> Any:
    for part in [segment for segment in path.split(".") if segment]:
        if isinstance(value, list) and part.isdigit():
            index = int(part)
            if index >= len(value):
                return None
            value = value[index]
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
        if value is None:
            return None
    return value


def _structured(result) -> Any:
    """The tool's structured result, or its text content parsed as JSON; a malformed one is a permanent error."""
    if result.structured_content is not None:
        return result.structured_content
    texts = [block.text for block in result.content if getattr(block, "type", "") == "text"]
    if not texts:
        return None
    text = "".join(texts)
    try:
        return json.loads(text)
    except ValueError:
        return {"text": text}


class McpConnector(Connector):
    def __init__(self, system, secret: str | None, vaulted=None) -> None:
        super().__init__(system, secret, vaulted)
        self.config = McpConfig.parse(system.connector_config)

    # --- The session ------------------------------------------------------------------------------------------

    def _session_key(self) -> SessionKey:
        """For whom the session is (the system, whose credential) and with what (settings, secret: fingerprinted)."""
        system, vaulted = self.system, self._vaulted
        credential = (type(vaulted).__name__, vaulted.pk) if vaulted is not None else ("", None)
        slot = (self.config.transport, system.pk or system.slug, *credential)
        settings = {key: value for key, value in (system.connector_config or {}).items() if key != "reads"}
        secret = [self._secret or "", *self.auth_headers().values()]
        return SessionKey.of(slot, settings, secret)

    def _client(self, errlog):
        """An MCP client for this system, entered by the session pool on its event loop."""
        from mcp import Client, StdioServerParameters

        config = self.config
        if config.transport == "stdio":
            env = {**_base_env(), **config.env}
            if config.secret_env and self._secret:
                env[config.secret_env] = self._secret
            params = StdioServerParameters(
                command=config.command, args=list(config.args), env=env, cwd=config.cwd or None
            )
            from mcp.client.stdio import stdio_client

            # The server's stderr goes to a file of ours: a Celery worker's sys.stderr is a logging proxy with no
            # file descriptor, and what the server says there explains a failure (logged with the error's reference).
            transport = stdio_client(params, errlog=errlog)
        else:
            transport = _http_transport(config.url, self.auth_headers(), config.timeout)
        return Client(transport, read_timeout_seconds=config.timeout, cache=None)

    def _run(self, work: Callable[[Any], Awaitable[T]], attempted: str, *, idempotent: bool) -> T:
        """Run `work(client)` on this system's live session (connectors.mcp.sessions), within the timeout, from
        synchronous code. `idempotent`: a read-only call, which may be sent again on a new session after a transport
        failure; a write never is unless nothing can have reached the server.

        A failure names the system, `attempted` and how it failed; what the server said (an exception's text, its
        last stderr line) is logged under the error's reference, never put in the message.
        """
        timeout = self.config.timeout
        pool = sessions.pool()
        try:
            return pool.run(
                pool.call(
                    self._session_key(),
                    self._client,
                    work,
                    timeout=timeout,
                    idempotent=idempotent,
                    answered=(PermanentError, TransientError, _ToolRefused),
                ),
                timeout=timeout + 5,
            )
        except (PermanentError, TransientError):
            raise
        except BaseException as exc:  # a dead process, a closed pipe, a refused connection, a protocol error
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            ours = _ours(exc)
            if isinstance(ours, _ToolRefused):  # worded here, outside the session: the wording reads the credential
                raise downstream_error(
                    self, PermanentError, attempted, "refused", said=ours, meaning="tool error"
                ) from None
            if ours is not None:
                raise ours from None
            if _contains_timeout(exc):
                status = f"timed out: the MCP server did not answer within {timeout:g} s"
            else:
                status = f"failed: the MCP server {_status(exc)}"
            raise downstream_error(self, TransientError, attempted, status, said=exc) from None

    def _call(
        self, tool: str, arguments: dict[str, Any], *, key: str | None = None, read: bool = False, pinned: str = ""
    ) -> Any:
        """Call `tool`. `pinned`: the digest of the definition a person accepted (tool pinning); the live one is
        compared first, on the same session, and a tool that changed or went is not called (ToolChanged)."""

        async def work(client) -> Any:
            if pinned:
                await _verify_pin(client, tool, pinned)
            meta = {IDEMPOTENCY_META: key} if key else None
            result = await client.call_tool(tool, arguments, meta=meta)
            if result.is_error:
                text = " ".join(getattr(block, "text", "") for block in result.content).strip()
                raise _ToolRefused(text or "no reason given")
            return _structured(result)

        return self._run(work, f"tool {tool}", idempotent=read)

    # --- The contract -----------------------------------------------------------------------------------------

    def list_tools(self) -> list[Any]:
        """Every tool the server lists, all pages of it."""
        return self._run(_all_tools, "tool list", idempotent=True)

    def read(self, resource: str, record_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        mapping = self.config.reads.get(resource)
        if mapping is None:
            raise PermanentError(f"{self.system.slug}: no read tool is mapped for {resource!r} (connector settings)")
        result = self._call(mapping.tool, render(mapping.arguments, record_id=record_id, payload={}), read=True)
        record = _at_path(result, mapping.result) if mapping.result else result
        if record is None:
            raise RecordNotFound(f"{self.system.slug}: {resource} {record_id} not found")
        if not isinstance(record, dict):
            raise PermanentError(f"{self.system.slug}: malformed result from {mapping.tool}: not an object")
        return {name: record.get(name) for name in fields} if fields is not None else record

    def execute(
        self, action, record_id: str, payload: dict[str, Any], idempotency_key: str, *, expected=None
    ) -> Result:
        operation = action.operation or {}
        tool = operation.get("tool") or action.name
        arguments = (
            render(operation["arguments"], record_id=record_id, payload=payload)
            if "arguments" in operation
            else payload
        )
        before = self._current(action, record_id)
        # Only the action's own tool is verified: it is the one the action's tool was pinned for (a compensation's
        # tool, when it is an action of its own, is pinned and checked there).
        pinned = action.tool_digest if tool == action.tool_name else ""
        result = self._call(tool, arguments, key=idempotency_key, pinned=pinned)
        compensation: dict[str, Any] = {}
        if isinstance(operation.get("compensate"), dict) and operation["compensate"].get("tool"):
            undo = operation["compensate"]
            compensation = {
                "tool": undo["tool"],
                "arguments": render(undo.get("arguments", {}), record_id=record_id, payload=payload),
            }
        after = result if isinstance(result, dict) else {"result": result}
        return Result(before=before, after=after, compensation=compensation)

    def compensate(
        self, action, record_id: str, compensation: dict[str, Any], idempotency_key: str, *, expected=None
    ) -> Result:
        if not compensation or not compensation.get("tool"):
            return super().compensate(action, record_id, compensation, idempotency_key)
        result = self._call(compensation["tool"], compensation.get("arguments", {}), key=idempotency_key)
        return Result(after=result if isinstance(result, dict) else {"result": result})

    def health(self) -> Health:
        try:
            tools = self.list_tools()
        except (TransientError, PermanentError) as exc:
            return Health(False, str(exc))
        return Health(True, f"{len(tools)} tool(s)")

    def _current(self, action, record_id: str) -> dict[str, Any]:
        """The record before the write, when a read tool is mapped for the action's resource (else nothing)."""
        if action.resource.name not in self.config.reads:
            return {}
        try:
            return self.read(action.resource.name, record_id)
        except RecordNotFound:
            return {}


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle costs milliseconds, and it never changes while we run."""
    import httpx2

    return httpx2.create_ssl_context()


def _http_transport(url: str, headers: dict[str, str], timeout: float):
    """The streamable HTTP transport with a client of its own (its headers carry the credential), closed with it."""
    from contextlib import asynccontextmanager

    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    @asynccontextmanager
    async def transport():
        async with (
            httpx2.AsyncClient(
                headers=headers,
                timeout=timeout,
                verify=_tls_context(),
                event_hooks={"response": [_refuse_unknown_session]},
            ) as client,
            streamable_http_client(url, http_client=client) as streams,
        ):
            yield streams

    return transport()


async def _refuse_unknown_session(response) -> None:
    """A 404 to a request that carried a session id: the server forgot the session and ran nothing of the request,
    so the pool may send it again on a new session (connectors.mcp.sessions.SessionUnknown)."""
    if response.status_code == 404 and "mcp-session-id" in response.request.headers:
        raise sessions.SessionUnknown("the MCP server does not know this session")


def _base_env() -> dict[str, str]:
    """What a stdio server inherits: the SDK's safe defaults (PATH, HOME…), never Gatehouse's own secrets."""
    from mcp.client.stdio import get_default_environment

    env = get_default_environment()
    if "PATH" not in env and os.environ.get("PATH"):
        env["PATH"] = os.environ["PATH"]
    return env


async def _all_tools(client) -> list[Any]:
    """The server's whole tool list, following its pages (a bounded number of them)."""
    tools: list[Any] = []
    cursor = None
    for _ in range(_MAX_TOOL_PAGES):
        listed = await client.list_tools(cursor=cursor) if cursor else await client.list_tools()
        tools.extend(listed.tools)
        cursor = listed.next_cursor
        if not cursor:
            return tools
    raise PermanentError(f"the MCP server's tool list runs over {_MAX_TOOL_PAGES} pages")


_MAX_TOOL_PAGES = 50


async def _verify_pin(client, tool: str, pinned: str) -> None:
    """Refuse to call `tool` unless the server lists it with the pinned definition (one tools/list on the session;
    the SDK lists them on a new session's first call anyway, to check the answer's output schema)."""
    live = next((found for found in await _all_tools(client) if found.name == tool), None)
    definition = tool_definition(live) if live is not None else None
    if definition is not None and definition_digest(definition) == pinned:
        return
    what = "no longer lists it" if definition is None else "offers a changed definition"
    raise ToolChanged(
        f"tool {tool} not called: the MCP server {what} (not the one approved)", tool=tool, definition=definition
    )


class _ToolRefused(Exception):
    """A tool answered with an error result (`isError`); its text is the server's, for the log line only."""


def _ours(exc: BaseException) -> PermanentError | TransientError | _ToolRefused | None:
    """Our own error raised inside the session, unwrapped from the task groups' exception groups."""
    if isinstance(exc, PermanentError | TransientError | _ToolRefused):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _ours(inner)
            if found is not None:
                return found
    return None


def _contains_timeout(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    return isinstance(exc, BaseExceptionGroup) and any(_contains_timeout(inner) for inner in exc.exceptions)


def _status(exc: BaseException) -> str:
    """How a session failed, in words that quote nothing the server sent: an MCP error's code, an HTTP status, or
    the kind of exception (its text can quote the server's answer, so it is only logged)."""
    from mcp.shared.exceptions import MCPError  # the SDK loads with the first MCP system, as in _run

    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(_status(inner) for inner in exc.exceptions))
    if isinstance(exc, MCPError):
        return f"answered error {exc.code}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return f"answered {status}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused the connection"
    return f"failed ({type(exc).__name__})"
