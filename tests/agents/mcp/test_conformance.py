"""The MCP conformance suite (`@modelcontextprotocol/conformance`, npm, in sandbox/mcp_servers) against the running
stack's /mcp: the server scenarios that apply to Gatehouse.

The suite's client sends no Authorization header (it has no option for one), so it talks to a loopback proxy that
adds the demo agent's bearer token and passes everything else through as it came (sandbox.bearer_proxy).

Run: server-initialize, ping, logging-set-level, tools-list, resources-list, dns-rebinding-protection.

Not run, as they do not apply:
- tools-call-*, resources-read-*, resources-templates-read, prompts-*, json-schema-2020-12: they call fixture tools
  and resources of the suite's reference server (`test_simple_text`, `test://static-text`, …) that a server whose
  tools are an agent's grants does not have. (tools-call-simple-text and tools-call-error pass anyway, only because
  an unknown tool is a tool error with text: not a finding.) The same paths are tested with Gatehouse's own tools and
  resources in test_tools, test_resources and test_notices.
- completion-complete, resources-subscribe/-unsubscribe, sampling and elicitation: capabilities Gatehouse does not
  declare.
- server-sse-polling, server-sse-multiple-streams: they need a session; the endpoint is stateless.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.bearer_proxy import bearer_proxy
from tests.agents.mcp.sessions import token_for
from tests.conftest import REQUIRE_SERVICES

ROOT = Path(__file__).resolve().parents[3]
NODE_MODULES = ROOT / "sandbox" / "mcp_servers" / "node_modules"
SUITE = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
NODE = NODE_MODULES / ".bin" / "node"  # the suite needs Node.js 22 (fs.globSync); the npm package `node` puts it here
SCENARIOS = ("server-initialize", "ping", "logging-set-level", "tools-list", "resources-list")
SCENARIOS += ("dns-rebinding-protection",)  # Gatehouse checks Host and Origin (agents.mcp.server.host_refusal)


@pytest.fixture
def proxied(live) -> Iterator[str]:
    if not SUITE.exists() or not NODE.exists():
        message = f"the MCP conformance suite or its Node.js 22 is not installed under {NODE_MODULES}: make install"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    proxy = bearer_proxy(live.stack.web_url, token_for())
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}/mcp"
    finally:
        proxy.shutdown()
        proxy.server_close()


def conformance(url: str, scenario: str, cwd: Path) -> tuple[int, list[dict]]:
    """One scenario of the suite: its exit status and its checks."""
    done = subprocess.run(
        [str(NODE), str(SUITE), "server", "--url", url, "--scenario", scenario, "--output-dir", str(cwd)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    checks = [json.loads(path.read_text()) for path in cwd.glob(f"server-{scenario}*/checks.json")]
    assert len(checks) == 1, (scenario, done.stdout, done.stderr)
    return done.returncode, checks[0]


@pytest.mark.slow
def test_the_applicable_scenarios_of_the_mcp_conformance_suite_pass(proxied, tmp_path):
    for scenario in SCENARIOS:
        status, checks = conformance(proxied, scenario, tmp_path)
        failed = [check for check in checks if check["status"] not in ("SUCCESS", "INFO")]
        assert status == 0 and not failed, (scenario, failed)
        assert any(check["status"] == "SUCCESS" for check in checks), (scenario, checks)
