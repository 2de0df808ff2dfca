"""The demo agent (sandbox/demo_agent.py) tells its story against the running stack, twice over coherently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from approvals.models import Proposal
from connectors.legacy_batch.services import batch_poll
from governance.models import Agent, System
from governance.services import agent_token_issue
from sandbox import demo_agent

pytestmark = pytest.mark.slow


def run_demo(live) -> tuple[int, list[str]]:
    _, token = agent_token_issue(agent=Agent.objects.get(slug="collections-agent"), channel="command", label="test")
    inventory = System.objects.get(slug="legacy-inventory")
    lines: list[str] = []
    code = demo_agent.main(
        live.stack.web_url,
        token,
        drop_folder=Path(inventory.connector_config["drop_folder"]),
        say=lines.append,
        decision_timeout=30,
        events_timeout=10,
        poll_now=lambda: batch_poll(system=inventory, channel="command"),  # no Celery beat in the test stack
    )
    return code, lines


def line(lines: list[str], start: str) -> str:
    found = [text for text in lines if text.lstrip().startswith(start)]
    assert found, f"no line starting {start!r} in:\n" + "\n".join(lines)
    return found[0].strip()


def test_demo_agent_tells_the_story(live):
    code, lines = run_demo(live)
    text = "\n".join(lines)

    assert code == 0, text
    assert lines[0].startswith("Demo agent: collections-agent (active) works through Gatehouse")
    assert "inventory-" in line(lines, "0.")
    assert "credit limit 2,000.00 USD" in line(lines, "1.") and "No email" in line(lines, "1.")
    assert "(2,000.00 → 2,300.00): executed by rule" in line(lines, "2.")
    assert "the same proposal (a replay); nothing was written twice" in text
    assert "+3,000.00 USD (2,300.00 → 5,300.00): pending_approval, waiting for a decision by user 'approver'" in line(
        lines, "3."
    )
    assert "/admin/approvals/proposal/" in line(lines, "Decide it:")
    assert "+6,000.00 USD on account 4472 (1,500.00 → 7,500.00): pending_approval, dual approval" in line(lines, "4.")
    assert "refused, scope_denied" in line(lines, "5.")
    assert "legacy-inventory event(s)" in line(lines, "6.") and "A-100 at EAST" in line(lines, "6.")
    assert lines[-5].startswith("Demo agent: finished.")
    assert "/admin/audit/auditevent/timeline/crm/4471/" in text
    assert live.crm_account("4471")["credit_limit"] == "2300.00"
    assert live.crm_account("4472")["credit_limit"] == "1500.00"  # the dual raise waits for people
    statuses = sorted(Proposal.objects.values_list("status", flat=True))
    assert statuses == ["executed", "pending_approval", "pending_approval"]


def test_a_second_run_builds_on_the_first(live):
    run_demo(live)
    code, lines = run_demo(live)

    assert code == 0, "\n".join(lines)
    # The demo rule adds up the agent's raises of 4471 in the last 24 h: this +300 is judged with the first run's.
    assert "(2,300.00 → 2,600.00): pending_approval (mode single: 300.00 USD now + " in line(lines, "2.")
    assert "earlier proposals) in the last 24 h on account 4471" in line(lines, "2.")
    assert line(lines, "3.").startswith("3. Still pending from an earlier run: +3,000.00 USD")
    assert line(lines, "4.").startswith("4. Still pending from an earlier run: +6,000.00 USD on 4472")
    assert "today's" in line(lines, "6.")  # the same export again: a copy, its events already read
    assert lines[-5].startswith("Demo agent: finished.")
    assert Proposal.objects.filter(status="pending_approval").count() == 3  # the two large ones and this small one
    assert live.crm_account("4471")["credit_limit"] == "2300.00"


def test_a_refused_token_is_told_with_the_url_that_refused_it(live):
    lines: list[str] = []

    code = demo_agent.main(live.stack.web_url, "gh_not_a_token", say=lines.append)

    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"Demo agent: stopped: {live.stack.web_url}/api/v1/me answered 401: ")
    assert lines[0].endswith("(unauthenticated)")


def test_without_a_base_url_it_calls_the_port_set_else_where_make_run_said_it_serves(tmp_path, monkeypatch):
    monkeypatch.delenv("GATEHOUSE_WEB_PORT", raising=False)
    assert demo_agent.default_base_url(tmp_path) == "http://127.0.0.1:8000"  # no demo recorded

    (tmp_path / "demo-run.json").write_text(json.dumps({"web_url": "http://127.0.0.1:18000"}))
    assert demo_agent.default_base_url(tmp_path) == "http://127.0.0.1:18000"

    monkeypatch.setenv("GATEHOUSE_WEB_PORT", "19000")
    assert demo_agent.default_base_url(tmp_path) == "http://127.0.0.1:19000"
