"""A call's answer is one JSON body, unless the server has something to say before it: then an event stream.

The SDK's stateless streamable HTTP transport answers every request POST either as one JSON body (`json_response`,
what Gatehouse serves: the cheapest, but it drops the notifications of a call) or as an event stream, committed
before the call even starts, which costs every call a few milliseconds whether it says anything or not. Gatehouse
keeps JSON and upgrades here, one request at a time: a notification of the call (a slow call's log notice,
wait_for_decision's progress; agents.mcp.notices) commits the response to an event stream, with the notification as
its first event; the SDK's JSON answer, when it comes, is sent as the stream's last event. A call with nothing to say
(tools/list, a quick read) is answered exactly as before.

A client that did not say it accepts `text/event-stream` never gets one: its calls' notifications are dropped, as in
JSON mode. The 2026-07-28 revision's transport (mcp.server._streamable_http_modern) defers the choice in the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

import anyio
import mcp_types as types
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EVENT_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]

# The response of the request being handled: set around the SDK's app, seen by the handlers of that request's call.
_RESPONSE: ContextVar[_Upgradable | None] = ContextVar("gatehouse_mcp_response", default=None)


async def notify(method: str, params: Mapping[str, Any]) -> bool:
    """Send a notification of the current call ahead of its answer; False when nothing can carry it (the client takes
    only JSON, or the answer has gone)."""
    response = _RESPONSE.get()
    if response is None:
        return False
    message = types.JSONRPCNotification(jsonrpc="2.0", method=method, params=dict(params))
    return await response.event(message.model_dump_json(by_alias=True, exclude_unset=True).encode())


class JsonUnlessNotified:
    """ASGI middleware around the SDK's streamable HTTP app in JSON mode (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        accept = b",".join(value for key, value in scope.get("headers", []) if key.lower() == b"accept")
        if scope["type"] != "http" or scope["method"] != "POST" or b"text/event-stream" not in accept.lower():
            await self.app(scope, receive, send)
            return
        response = _Upgradable(send)
        entered = _RESPONSE.set(response)
        try:
            await self.app(scope, receive, response.send)
        finally:
            _RESPONSE.reset(entered)


class _Upgradable:
    """One POST's response: JSON as the SDK sends it, or an event stream from the call's first notification on."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = anyio.Lock()  # the call's notifications and the SDK's answer come from different tasks
        self._state = "json"  # json → streaming → ended, or json → answered
        self._body = b""

    async def event(self, data: bytes) -> bool:
        async with self._lock:
            if self._state == "json":
                await self._send({"type": "http.response.start", "status": 200, "headers": EVENT_STREAM_HEADERS})
                self._state = "streaming"
            if self._state != "streaming":
                return False
            await self._send({"type": "http.response.body", "body": _event(data), "more_body": True})
            return True

    async def send(self, message: Message) -> None:
        async with self._lock:
            if self._state == "json":
                if message["type"] == "http.response.start":
                    self._state = "answered"
                await self._send(message)
            elif self._state == "answered":
                await self._send(message)
            elif self._state == "streaming" and message["type"] == "http.response.body":
                self._body += message.get("body", b"")
                if not message.get("more_body", False):  # the SDK's whole JSON answer: the stream's last event
                    self._state = "ended"
                    await self._send({"type": "http.response.body", "body": _event(self._body), "more_body": False})
            # streaming: the SDK's http.response.start for its JSON body is replaced by the stream's own


def _event(data: bytes) -> bytes:
    """One server-sent event of type `message` (the transport's), its data split on lines as the format requires."""
    lines = data.splitlines() or [b""]
    return b"event: message\r\n" + b"".join(b"data: " + line + b"\r\n" for line in lines) + b"\r\n"
