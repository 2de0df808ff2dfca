"""MCP overhead, measured in one run against PERFORMANCE.md's target for the governed MCP tool call.

    .venv/bin/python -m bench.mcp_overhead            # embedded default (SQLite, filesystem broker)
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/x REDIS_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python -m bench.mcp_overhead        # PostgreSQL + Redis (uses database gatehouse_bench_mcp)

Starts a downstream MCP server (sandbox.mcp_ledger: the official SDK, streamable HTTP on loopback, a read-only tool
answering at once, a bearer token required), makes it an `mcp` system of Gatehouse with a read grant for the demo's
collections agent, and starts Gatehouse under gunicorn (2 uvicorn workers: /mcp is served by the ASGI application, as
in production). Then the official MCP client, one session reused per side, calls

  - `get_account` straight on the downstream server, and
  - `ledger_read_account` through Gatehouse's /mcp (token check, kill switch, grant, connector call, audit event),

alternating in rounds so both see the same machine, and prints p50/p99 of each and the milliseconds Gatehouse adds
(target: ≤ 3 ms p50, ≤ 8 ms p99).
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.environment import prepare_environment
from bench.load import Run

ROOT = Path(__file__).resolve().parents[1]
DB_NAME = "gatehouse_bench_mcp"
TARGET_P50_MS, TARGET_P99_MS = 3.0, 8.0


def _fmt(run: Run) -> str:
    return f"p50 {run.p50:6.2f} ms  p99 {run.percentile(99):6.2f} ms  (n={run.count})"


def _ledger_system(url: str, token: str, owner: Any) -> None:
    """The downstream server as an `mcp` system, its account resource, and a read grant for the collections agent."""
    from audit.choices import Channel
    from connectors.services import credential_set
    from governance.choices import Access, ConnectorKind, IntegrationPattern, SystemCategory, WriteMode
    from governance.models import Agent, Resource, ScopeGrant, System

    system = System(
        slug="ledger",
        name="Ledger (MCP)",
        category=SystemCategory.RECORD,
        integration_pattern=IntegrationPattern.MCP,
        connector_kind=ConnectorKind.MCP,
        connector_config={
            "transport": "http",
            "url": url,
            "timeout": 10,
            "reads": {"accounts": {"tool": "get_account", "arguments": {"account_id": "{record_id}"}}},
        },
        owner=owner,
        rollback_contact="Ledger desk",
        write_mode=WriteMode.READ_ONLY,
    )
    system.full_clean()
    system.save()
    credential_set(system=system, secret=token, actor=owner, channel=Channel.COMMAND)
    resource = Resource.objects.create(
        system=system, name="accounts", label="account", fields=["id", "name", "status", "credit_limit"]
    )
    ScopeGrant.objects.create(
        agent=Agent.objects.get(slug="collections-agent"),
        system=system,
        resource=resource,
        access=Access.READ,
        fields=[],
        justification="benchmark",
        granted_by=owner,
    )


async def _measure(
    direct_url: str, direct_token: str, gatehouse_url: str, agent_token: str, *, count: int, rounds: int
) -> tuple[Run, Run]:
    """Both sides with one session each, alternating in rounds; the first calls of each session are warm-up."""
    from contextlib import AsyncExitStack

    import httpx2
    from mcp.client import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def session(stack: AsyncExitStack, url: str, token: str) -> ClientSession:
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30))
        )
        read, write = await stack.enter_async_context(streamable_http_client(url, http_client=http))
        opened = await stack.enter_async_context(ClientSession(read, write))
        await opened.initialize()
        return opened

    async with AsyncExitStack() as stack:
        direct = await session(stack, direct_url, direct_token)
        governed = await session(stack, gatehouse_url, agent_token)

        async def direct_call() -> None:
            result = await direct.call_tool("get_account", {"account_id": "4471"})
            assert not result.is_error and result.structured_content["id"] == "4471", result

        async def governed_call() -> None:
            result = await governed.call_tool("ledger_read_account", {"record_id": "4471"})
            assert not result.is_error and result.structured_content["data"]["id"] == "4471", result

        async def timed(call: Callable[[], Awaitable[None]], n: int, into: list[float]) -> None:
            for _ in range(n):
                started = time.perf_counter()
                await call()
                into.append(time.perf_counter() - started)

        warm: list[float] = []
        await timed(direct_call, 20, warm)
        await timed(governed_call, 40, warm)  # both gunicorn workers, each with its downstream session
        direct_latencies: list[float] = []
        governed_latencies: list[float] = []
        per_round = max(1, count // rounds)
        for _ in range(rounds):
            await timed(direct_call, per_round, direct_latencies)
            await timed(governed_call, per_round, governed_latencies)
    return Run(latencies=direct_latencies), Run(latencies=governed_latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="Calls on each side.")
    parser.add_argument("--rounds", type=int, default=10, help="Alternations between the two sides.")
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    parser.add_argument(
        "--profile", type=Path, help="Record the gunicorn workers with py-spy while measuring: collapsed stacks here."
    )
    args = parser.parse_args()

    database = prepare_environment(DB_NAME)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import anyio
    from django.conf import settings
    from django.core.management import call_command

    from console.demo import seed_demo
    from governance.models import Agent
    from governance.services import agent_token_issue
    from tests.stack import BIN, Stack, free_port

    call_command("migrate", verbosity=0)
    stack = Stack(Path(settings.VAR_DIR) / "stack")
    ledger_token = secrets.token_urlsafe(24)
    token_file = stack.dir / "ledger.token"
    token_file.write_text(ledger_token)
    figures: dict[str, float] = {}
    try:
        ledger_port = free_port()
        stack.start(
            "ledger",
            [
                str(BIN / "python"),
                "-m",
                "sandbox.mcp_ledger",
                "--port",
                str(ledger_port),
                "--token-file",
                str(token_file),
            ],
            "listening on",
            env=stack.env(),
        )
        ledger_url = f"http://127.0.0.1:{ledger_port}/mcp"
        seed_demo(crm_url="http://127.0.0.1:9", crm_staging_url="http://127.0.0.1:9")
        agent = Agent.objects.get(slug="collections-agent")
        _ledger_system(ledger_url, ledger_token, agent.owner)
        _, agent_token = agent_token_issue(agent=agent, channel="command")
        port = free_port()
        stack.start(
            "gunicorn",
            [
                str(BIN / "gunicorn"),
                "gatehouse.asgi:application",
                "-k",
                "uvicorn.workers.UvicornWorker",
                "--workers",
                "2",
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "info",
            ],
            "Application startup complete",
            env=stack.env(DJANGO_SETTINGS_MODULE="bench.settings"),
        )
        time.sleep(1)  # the second worker's startup line may follow the first's
        spy = None
        if args.profile:
            gunicorn = stack.processes["gunicorn"].popen.pid
            spy = subprocess.Popen(
                [
                    *(str(BIN / "py-spy"), "record", "--pid", str(gunicorn), "--subprocesses", "--nonblocking"),
                    *("--format", "raw", "--output", str(args.profile), "--rate", "100"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        direct, governed = anyio.run(
            lambda: _measure(
                ledger_url,
                ledger_token,
                f"http://127.0.0.1:{port}/mcp",
                agent_token,
                count=args.count,
                rounds=args.rounds,
            )
        )
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        print(f"Gatehouse MCP overhead — {database}, gunicorn 2 uvicorn workers, downstream MCP server on loopback\n")
        print("Read-only tool get_account of account 4471, one MCP session reused by the client")
        print(f"  straight on the downstream server   {_fmt(direct)}")
        print(f"  through Gatehouse's /mcp            {_fmt(governed)}")
        figures.update(
            direct_p50_ms=direct.p50,
            direct_p99_ms=direct.percentile(99),
            governed_p50_ms=governed.p50,
            governed_p99_ms=governed.percentile(99),
        )
        figures.update(
            added_p50_ms=figures["governed_p50_ms"] - figures["direct_p50_ms"],
            added_p99_ms=figures["governed_p99_ms"] - figures["direct_p99_ms"],
        )
        print(
            f"  added p50 {figures['added_p50_ms']:.2f} ms (target ≤ {TARGET_P50_MS:g}), "
            f"added p99 {figures['added_p99_ms']:.2f} ms (target ≤ {TARGET_P99_MS:g})"
        )
    finally:
        stack.stop_all()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
