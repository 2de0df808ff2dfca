"""Helpers for tests against the running stack: an agent's HTTP client, the CRM's side door, waiting for states."""

from __future__ import annotations

import time
from typing import Any

import httpx

from approvals.models import Proposal
from governance.models import Agent
from governance.services import agent_token_issue
from sandbox.testing import crm_control


class LiveStack:
    def __init__(self, stack) -> None:
        self.stack = stack
        self._clients: list[httpx.Client] = []

    def agent(self, slug: str = "collections-agent") -> httpx.Client:
        """An HTTP client for the agent, with a fresh token, talking to the web process."""
        _, raw = agent_token_issue(agent=Agent.objects.get(slug=slug), channel="command", label="test")
        client = httpx.Client(base_url=self.stack.web_url, headers={"Authorization": f"Bearer {raw}"}, timeout=30)
        self._clients.append(client)
        return client

    def crm_control(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return crm_control(self.stack.crm_url, path, body)

    def crm_account(self, account: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.stack.crm_url}/accounts/{account}", headers={"Authorization": f"Bearer {self.stack.crm_token}"}
        )
        response.raise_for_status()
        return response.json()

    def crm_writes(self, key: str) -> int:
        return self.crm_control("/_stats").get("writes_by_key", {}).get(key, 0)

    def wait_for(self, proposal_id, *statuses: str, timeout: float = 30) -> Proposal:
        deadline = time.monotonic() + timeout
        while True:
            proposal = Proposal.objects.get(pk=proposal_id)
            if proposal.status in statuses:
                return proposal
            if time.monotonic() > deadline:
                logs = "\n".join(p.output()[-3000:] for p in self.stack.processes.values() if "worker" in p.name)
                raise AssertionError(f"proposal stayed {proposal.status}, wanted {statuses}\n{logs}")
            time.sleep(0.1)

    def close(self) -> None:
        for client in self._clients:
            client.close()
