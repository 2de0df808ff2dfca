"""Configuration of an `mcp` system (a downstream MCP server), checked when the system is saved.

```json
{"transport": "stdio", "command": "node", "args": ["…/server-memory/dist/index.js"],
 "env": {"MEMORY_FILE_PATH": "/var/lib/memory.jsonl"}, "timeout": 10,
 "reads": {"entities": {"tool": "open_nodes", "arguments": {"names": ["{record_id}"]}, "result": "entities.0"}}}
{"transport": "http", "url": "https://tools.example.com/mcp", "timeout": 10, "reads": {…}}
```

`reads` maps each Gatehouse resource of the system to the read-only tool that returns one record: `arguments` is a
template (`"{record_id}"` is replaced by the record id), `result` a dotted path into the tool's structured result.
Writes are ActionTypes whose `operation` names the tool (see `connectors.mcp.connector`). The vaulted secret goes to
an http server as a bearer token, and to a stdio server in the environment variable `secret_env` when set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError

from connectors.config import http_url, seconds, settings_object
from connectors.hosts import command_refusal

_KEYS = {"transport", "command", "args", "env", "cwd", "url", "timeout", "secret_env", "reads"}
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


@dataclass(frozen=True)
class ReadMapping:
    tool: str
    arguments: dict[str, Any]
    result: str = ""


@dataclass(frozen=True)
class McpConfig:
    transport: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    url: str = ""
    timeout: float = 10.0
    secret_env: str = ""
    reads: dict[str, ReadMapping] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any) -> McpConfig:
        settings_object(raw, _KEYS)
        transport = raw.get("transport")
        if transport not in ("stdio", "http"):
            raise ValidationError('Set "transport" to "stdio" (a command) or "http" (a streamable HTTP URL).')
        fields: dict[str, Any] = {"transport": transport, "timeout": seconds(raw, "timeout", cls.timeout, maximum=300)}
        if transport == "stdio":
            command = raw.get("command")
            if not isinstance(command, str) or not command.strip():
                raise ValidationError('A stdio server needs "command": the program to start, e.g. "node".')
            args = raw.get("args", [])
            if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
                raise ValidationError('"args" must be a list of strings.')
            env = raw.get("env", {})
            if not isinstance(env, dict) or not all(
                isinstance(k, str) and re.fullmatch(_ENV_NAME, k) and isinstance(v, str) for k, v in env.items()
            ):
                raise ValidationError('"env" must map variable names to strings.')
            cwd = raw.get("cwd", "")
            if not isinstance(cwd, str):
                raise ValidationError('"cwd" must be a folder path.')
            refusal = command_refusal(command, args)
            if refusal:
                raise ValidationError(refusal)
            fields.update(command=command, args=tuple(args), env=dict(env), cwd=cwd)
        else:
            fields["url"] = http_url(
                raw, "url", invalid='An http server needs "url": its streamable HTTP endpoint, e.g. ".../mcp".'
            )
        secret_env = raw.get("secret_env", "")
        if secret_env and (not isinstance(secret_env, str) or not re.fullmatch(_ENV_NAME, secret_env)):
            raise ValidationError('"secret_env" must be an environment variable name.')
        fields["secret_env"] = secret_env or ""
        reads = raw.get("reads", {})
        if not isinstance(reads, dict):
            raise ValidationError('"reads" must map resource names to {"tool", "arguments", "result"}.')
        parsed_reads = {}
        for resource, spec in reads.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("tool"), str) or not spec["tool"]:
                raise ValidationError(f'reads.{resource}: name the read-only "tool" that returns one record.')
            arguments = spec.get("arguments", {})
            result = spec.get("result", "")
            if not isinstance(arguments, dict) or not isinstance(result, str):
                raise ValidationError(f'reads.{resource}: "arguments" must be an object and "result" a path.')
            parsed_reads[resource] = ReadMapping(tool=spec["tool"], arguments=arguments, result=result)
        fields["reads"] = parsed_reads
        return cls(**fields)
