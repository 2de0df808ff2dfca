"""The official MCP client against the running stack's web process, for the MCP endpoint's tests.

Each scenario runs the SDK client with anyio on an event loop of its own thread (the suite's Playwright fixture may
already hold one in the test's thread). Database work a scenario does mid-session (disable the agent, revoke its
token, approve a proposal) goes through `db`, in a worker thread that closes its connection afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
from asgiref.sync import sync_to_async
from django.db import connections
from mcp.client import ClientSession
from mcp.client.streamable_http import streamable_http_client

from governance.models import Agent
from governance.services import agent_token_issue


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async scenario to its end on a fresh event loop in a thread of its own."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(anyio.run, scenario).result()


async def db(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """ORM work from inside a scenario, in a worker thread whose connection is closed afterwards."""

    def work() -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return await sync_to_async(work, thread_sensitive=False)()


def token_for(slug: str = "collections-agent") -> str:
    return agent_token_issue(agent=Agent.objects.get(slug=slug), channel="command", label="mcp test")[1]


@asynccontextmanager
async def mcp_session(live, token: str, **options: Any) -> AsyncIterator[ClientSession]:
    """An initialized session of the official client (`options`: ClientSession's, e.g. logging_callback)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)) as http,
        streamable_http_client(f"{live.stack.web_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write, **options) as session,
    ):
        await session.initialize()
        yield session
