"""Helpers of the impact tests at both doors (REST and MCP): take credit_limit out of collections-agent's read grant,
put it back, and tell an answer that shows the impact from one that hides it (CONTRACT.md, `impact`)."""

from __future__ import annotations

import json
import re
from typing import Any

from governance.choices import Access
from governance.models import ScopeGrant

RULE = "Credit limit changes on crm"
# 4471 starts at 2000.00: a limit of 5000.00 is +3000.00, in one approver's band (500.00-5000.00).
RAISE = {"credit_limit": "5000.00"}
# What would tell the amount or the current limit: the amount, the limit, the band's range.
SECRETS = ("3000", "3,000", "2000", "2,000", "500.00", "5000.00–", "–5000")


def read_grant() -> ScopeGrant:
    return ScopeGrant.objects.get(
        agent__slug="collections-agent", system__slug="crm", resource__name="accounts", access=Access.READ
    )


def narrow(how: str = "without-the-field") -> None:
    """Take credit_limit out of collections-agent's read grant on crm accounts, or take the whole read grant."""
    grant = read_grant()
    if how == "without-the-field":
        grant.fields = ["name", "status", "notes"]
        grant.save()  # saved, not update(): the grant's history records the change
    else:
        grant.delete()


def widen() -> None:
    grant = read_grant()
    grant.fields = ["name", "status", "credit_limit", "notes"]
    grant.save()


def assert_no_amount(text: str) -> None:
    """Nothing in `text` names the amount, the current limit or the band (ids and times left out: a uuid or a
    microsecond may hold "3000" by chance)."""
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d)?", "<time>", text)
    for secret in SECRETS:
        assert secret not in text, (secret, text)


def assert_hidden(body: dict[str, Any]) -> None:
    """No amount, no band, and a reason that names the rule and the mode but nothing the amount could be read from.
    The payload is the agent's own (5000.00) and may show."""
    assert body["impact"] == {"amount": None, "currency": "USD"}
    decision = body["decision"]
    assert decision["mode"] == "single" and decision["approver"] == "approver"
    assert decision["band"] is None
    assert RULE in decision["reason"] and "one person approves it" in decision["reason"]
    assert "credit_limit" in decision["reason"] and "not shown" in decision["reason"]
    shown = [body["impact"], decision, body["reason"], body["rejection_reason"], body["failure_reason"]]
    assert_no_amount(json.dumps(shown, ensure_ascii=False))


def assert_shown(body: dict[str, Any]) -> None:
    assert body["impact"] == {"amount": "3000.00", "currency": "USD"}
    assert body["decision"]["mode"] == "single"
    assert body["decision"]["band"] and "3000" in body["decision"]["reason"]
