"""Sample careless MCP server: a stdio MCP server (the official SDK's MCPServer) whose every error repeats its
credential and its arguments, as some systems do in a debug mode.

Like the sample CRM's echo mode it is deliberately *not* part of Gatehouse: a test makes it a `stdio` MCP system whose
vaulted secret reaches it in ``ECHO_TOKEN`` (the system's ``secret_env``), then shows that none of what it says
reaches an agent, a proposal, an e-mail or a log line unredacted.

Run it with ``python -m sandbox.mcp_echo`` (Gatehouse starts it; it speaks MCP on stdin and stdout). Tools:

- ``lookup(key)``   a tool error (``isError``) whose text quotes the token and the key
- ``explode(key)``  a JSON-RPC error, code -32001, whose message quotes the token and the key
- ``ping()``        ``{"ok": true}``: the server is up

With ``ECHO_CRASH=1`` in its environment it writes the token to stderr and exits before answering anything.
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError

BACKEND_REFUSED = -32001  # an implementation-defined JSON-RPC server error


def create_server(token: str) -> MCPServer:
    server = MCPServer("sandbox-mcp-echo", version="1", subscriptions=False)

    @server.tool(name="lookup", description="Look a record up (always refused, quoting what it was given).")
    def lookup(key: str) -> dict:
        raise ToolError(f"Debug: the token {token!s} may not read {key}; Authorization: Bearer {token}")

    @server.tool(name="explode", description="Fail as a protocol error, quoting what it was given.")
    def explode(key: str) -> dict:
        raise MCPError(code=BACKEND_REFUSED, message=f"backend refused token {token} for {key}")

    @server.tool(name="ping", description="Answer that the server is up.")
    def ping() -> dict:
        return {"ok": True}

    return server


def main() -> int:
    token = os.environ.get("ECHO_TOKEN", "")
    if os.environ.get("ECHO_CRASH") == "1":
        sys.stderr.write(f"fatal: could not log in to the backend with token {token}\n")
        return 3
    anyio.run(create_server(token).run_stdio_async)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
