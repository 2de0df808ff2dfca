"""What agent calls are checked against is cached per process under the policy generation (governance/policy_cache.py).

The generation is moved by database triggers (governance/policy_triggers.py), so a change made any way at all — a
service, a bulk update, raw SQL, in this process or another — refuses the very next call: a revoked token, a withdrawn
grant, an engaged kill switch. These tests warm the cache first, so a stale answer would show.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from core.errors import ScopeDenied
from core.request_context import request_id_set
from governance import policy_cache
from governance.gate import check_read
from governance.models import Agent, AgentToken, GlobalSwitch, PolicyGeneration, ScopeGrant, System
from governance.services import agent_token_issue

READ = "/api/v1/systems/crm/accounts/4471"


def generation() -> str | None:
    return PolicyGeneration.objects.filter(pk=1).values_list("value", flat=True).first()


@pytest.fixture
def collections(crm_demo, agent_client):
    policy_cache.clear()
    return agent_client("collections-agent")


def _queries_naming(queries, table: str) -> list[str]:
    return [query["sql"] for query in queries if f'"{table}"' in query["sql"]]


# --- The triggers -----------------------------------------------------------------------------------------------


CHANGES = {
    "a token revoked (queryset update)": lambda: AgentToken.objects.update(revoked_at=timezone.now()),
    "an agent disabled (save)": lambda: _save(Agent.objects.get(slug="collections-agent"), status="disabled"),
    "a grant deleted": lambda: ScopeGrant.objects.filter(agent__slug="collections-agent").delete(),
    "a system frozen (raw SQL)": lambda: _raw("UPDATE governance_system SET writes_frozen = TRUE"),
    "the global stop engaged (raw SQL)": lambda: _raw("UPDATE governance_globalswitch SET engaged = TRUE"),
    "a rule's band edited": lambda: _raw("UPDATE governance_thresholdband SET sla = sla"),
    "a credential deleted": lambda: _raw("DELETE FROM connectors_agentcredential"),
    "an approver deactivated": lambda: _raw("UPDATE auth_user SET is_active = FALSE WHERE username = 'approver'"),
}


def _save(obj, **fields) -> None:
    for name, value in fields.items():
        setattr(obj, name, value)
    obj.save()


def _raw(sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_any_change_to_what_calls_are_checked_against_moves_the_generation(demo, change):
    GlobalSwitch.objects.get_or_create(pk=1)
    agent_token_issue(agent=Agent.objects.get(slug="collections-agent"), channel="command")
    before = generation()
    assert before is not None
    change()
    assert generation() not in (None, before)


def test_a_token_s_last_use_and_a_person_s_last_login_move_nothing(demo):
    agent_token_issue(agent=Agent.objects.get(slug="collections-agent"), channel="command")
    before = generation()
    AgentToken.objects.update(last_used_at=timezone.now())
    _raw("UPDATE auth_user SET last_login = CURRENT_TIMESTAMP")
    assert generation() == before


def test_a_rolled_back_change_takes_its_generation_with_it_and_is_never_drawn_again(demo):
    before = generation()
    with pytest.raises(RuntimeError), transaction.atomic():
        ScopeGrant.objects.filter(agent__slug="collections-agent").delete()
        during = generation()
        raise RuntimeError("roll back")
    assert generation() == before
    ScopeGrant.objects.filter(agent__slug="collections-agent").delete()
    assert generation() not in (before, during)


# --- The cache, warm, over HTTP -----------------------------------------------------------------------------------


def test_a_warm_read_asks_the_database_only_for_the_generation_and_the_audit_event(collections):
    assert collections.get(READ).status_code == 200
    with CaptureQueriesContext(connection) as warm:
        assert collections.get(READ).status_code == 200
    for table in ("governance_agenttoken", "governance_scopegrant", "governance_system", "connectors_agentcredential"):
        assert not _queries_naming(warm.captured_queries, table), table
    assert AuditEvent.objects.filter(verb="read", record_id="4471").count() == 2


REFUSALS = {
    "token revoked by a bulk update": (lambda: AgentToken.objects.update(revoked_at=timezone.now()), 401),
    "read grant withdrawn": (lambda: ScopeGrant.objects.filter(access="read").delete(), 403),
    "global stop engaged in raw SQL": (lambda: _raw("UPDATE governance_globalswitch SET engaged = TRUE"), 503),
    "agent disabled in raw SQL": (lambda: _raw("UPDATE governance_agent SET status = 'disabled'"), 403),
    "system disabled": (lambda: System.objects.filter(slug="crm").update(write_mode="disabled"), 503),
}


@pytest.mark.parametrize(("change", "status"), REFUSALS.values(), ids=REFUSALS.keys())
def test_the_next_call_after_a_change_is_refused_however_it_was_made(collections, change, status):
    GlobalSwitch.objects.get_or_create(pk=1)
    assert collections.get(READ).status_code == 200
    assert collections.get(READ).status_code == 200  # answered from the cache
    change()
    assert collections.get(READ).status_code == status


def test_a_request_id_chosen_by_the_caller_does_not_carry_a_call_s_policy_into_the_next(collections):
    """X-Request-ID is the caller's to choose: sent the same on every call, it must not make one call's reading of the
    policy last into the next (each request is told apart by a number of the process's own)."""
    same = {"HTTP_X_REQUEST_ID": "always-the-same"}
    assert collections.get(READ, **same).status_code == 200
    GlobalSwitch.objects.update_or_create(pk=1, defaults={"engaged": True, "reason": "drill"})
    assert collections.get(READ, **same).status_code == 503


def test_a_request_that_opened_no_scope_never_answers_from_an_earlier_request_s(demo):
    """A process serves agents and people: an admin request right after an agent's, in the same thread and even under
    the same request id, must not read policy under the generation the agent's request read."""
    agent = Agent.objects.get(slug="collections-agent")
    with request_id_set("same"):
        policy_cache.open_scope()
        assert check_read(agent, system_slug="crm", resource_name="accounts", record_id="4471", channel="api")
    ScopeGrant.objects.filter(agent=agent, access="read").delete()
    with request_id_set("same"), pytest.raises(ScopeDenied):
        check_read(agent, system_slug="crm", resource_name="accounts", record_id="4471", channel="api")


def test_a_grant_that_expires_refuses_the_next_call_though_no_generation_moved(collections):
    ends = timezone.now() + timedelta(seconds=1.5)
    ScopeGrant.objects.filter(access="read").update(expires_at=ends)
    assert collections.get(READ).status_code == 200
    assert collections.get(READ).status_code == 200  # the grant, with its end, is cached
    before = generation()
    time.sleep(max(0.0, (ends - timezone.now()).total_seconds()) + 0.1)
    assert collections.get(READ).status_code == 403  # expiry is compared with the clock at each call
    assert generation() == before


def test_without_a_generation_row_every_lookup_asks_the_database(collections):
    assert collections.get(READ).status_code == 200
    PolicyGeneration.objects.all().delete()
    with CaptureQueriesContext(connection) as cold:
        assert collections.get(READ).status_code == 200
    assert _queries_naming(cold.captured_queries, "governance_scopegrant")


# --- Another process ------------------------------------------------------------------------------------------


def test_a_kill_switch_engaged_here_refuses_the_next_call_in_the_web_process(live):
    agent = live.agent()
    assert agent.get(READ).status_code == 200
    assert agent.get(READ).status_code == 200  # the web process now answers from its cache
    GlobalSwitch.objects.update_or_create(pk=1, defaults={"engaged": True, "reason": "drill"})
    refused = agent.get(READ)
    assert refused.status_code == 503 and refused.json()["code"] == "system_frozen"
    GlobalSwitch.objects.filter(pk=1).update(engaged=False)
    assert agent.get(READ).status_code == 200
