"""Gatehouse as an MCP server: `tools` says which tools an agent has and what a call does; `server` serves them."""
