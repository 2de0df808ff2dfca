"""The control plane as each role would attack it: connector settings, tokens, owners, sign-offs, kill switches.

Each test drives the admin as the role does (a crafted POST where the page hides the control) and the service the
admin calls, and asserts what is refused, what is left unchanged, and what the audit trail says.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from approvals.killswitch import SwitchTarget, kill_switch_off, kill_switch_on
from audit.models import AuditEvent
from connectors.base import PermanentError
from connectors.hosts import host_refusal
from connectors.registry import connector_for
from governance.choices import Role
from governance.models import Agent, AgentToken, System, ThresholdRule
from governance.services import agent_token_issue, system_connection_set, threshold_rule_sign_off
from tests.factories import UserFactory
from tests.governance.test_admin import as_form_data, rule_change_post

pytestmark = pytest.mark.django_db
User = get_user_model()

METADATA = "http://169.254.169.254/latest/meta-data"  # the cloud's instance metadata: link-local, a classic SSRF


def url(name: str, *args: object) -> str:
    return reverse(f"admin:{name}", args=args)


@pytest.fixture
def crm(demo) -> System:
    return System.objects.get(slug="crm")


@pytest.fixture
def integrator(demo):
    return UserFactory(username="ines", roles=[Role.INTEGRATORS])


def signed_in(client, username: str):
    client.force_login(User.objects.get(username=username))
    return client


# --- 1. Connector settings: only integrators and superusers, within the allow-lists, audited ---------------------


@pytest.mark.parametrize("username", ["owner", "operator", "auditor"])
def test_a_crafted_post_of_connector_settings_on_the_system_page_changes_nothing(client, crm, username):
    before = dict(crm.connector_config)
    data = as_form_data(crm, connector_config={"base_url": METADATA}, connector_kind="mcp")
    signed_in(client, username).post(url("governance_system_change", crm.pk), data)
    crm.refresh_from_db()
    assert crm.connector_config == before and crm.connector_kind == "http"


@pytest.mark.parametrize("username", ["owner", "operator", "auditor", "approver"])
def test_the_connector_settings_page_is_closed_to_every_role_but_integrators(client, crm, username):
    client = signed_in(client, username)
    assert client.get(url("governance_systemconnection_change", crm.pk)).status_code == 403
    response = client.post(url("governance_systemconnection_change", crm.pk), {"connector_kind": "http"})
    assert response.status_code == 403
    assert crm.connector_config["base_url"] not in client.get(url("governance_system_change", crm.pk)).content.decode()


def test_an_integrator_changes_connector_settings_on_their_page_and_the_trail_keeps_before_and_after(
    client, crm, integrator
):
    client.force_login(integrator)
    old = crm.connector_config["base_url"]
    config = {**crm.connector_config, "base_url": "http://127.0.0.1:9/v2"}
    response = client.post(
        url("governance_systemconnection_change", crm.pk),
        {"connector_kind": "http", "connector_config": __import__("json").dumps(config)},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    crm.refresh_from_db()
    assert crm.connector_config["base_url"] == "http://127.0.0.1:9/v2"
    event = AuditEvent.objects.get(verb="configured", system=crm)
    assert event.person == integrator and event.resource == "system"
    assert event.state_before["connector_config"]["base_url"] == old
    assert event.state_after["connector_config"]["base_url"] == "http://127.0.0.1:9/v2"


def test_the_service_refuses_a_business_owner_whatever_door_calls_it(crm):
    with pytest.raises(PermissionDenied):
        system_connection_set(
            system=crm, kind="http", config={"base_url": "http://127.0.0.1:1"}, user=crm.owner, channel="admin"
        )


@pytest.mark.parametrize(
    "address",
    [METADATA, "http://10.1.2.3/api", "http://192.168.0.10", "http://[fe80::1]/x", "http://localhost:8100"],
)
def test_private_loopback_and_link_local_hosts_are_refused_unless_listed(crm, address):
    with override_settings(GATEHOUSE_CONNECTOR_HOSTS=["crm.example.com"]), pytest.raises(ValidationError) as refused:
        system_connection_set(system=crm, kind="http", config={"base_url": address}, user=None, channel="command")
    assert "GATEHOUSE_CONNECTOR_HOSTS" in " ".join(refused.value.messages)


def test_listed_hosts_networks_and_wildcards_are_allowed():
    hosts = ["crm.example.com:8443", "*.corp.example.com", "10.20.0.0/16", "[::1]"]
    with override_settings(GATEHOUSE_CONNECTOR_HOSTS=hosts):
        assert host_refusal("crm.example.com", 8443) is None
        assert host_refusal("crm.example.com", 443) is not None  # another port: not listed, and not resolvable here
        assert host_refusal("billing.corp.example.com", None) is None
        assert host_refusal("10.20.7.7", 80) is None
        assert host_refusal("10.21.7.7", 80) is not None
        assert host_refusal("::1", 8100) is None


def test_settings_changed_behind_the_admins_back_still_cannot_connect_elsewhere(crm):
    """The check runs again whenever a connector is built: the worker never sends the credential to a host that a
    row edited in the database names."""
    System.objects.filter(pk=crm.pk).update(connector_config={**crm.connector_config, "base_url": METADATA})
    crm.refresh_from_db()
    with pytest.raises(PermanentError, match=r"169\.254\.169\.254"):
        connector_for(crm)


@pytest.mark.parametrize(
    "command",
    [
        ["sh", "-c", "cat /etc/passwd"],
        ["node", "-e", "require('child_process').exec('id')"],  # the listed program, not the listed script
        ["node", "{samples}/../../../tmp/evil.js"],  # climbs out of the listed folder
    ],
    ids=["another program", "listed program, other arguments", "climbs out"],
)
def test_a_stdio_mcp_server_must_be_a_command_the_operator_listed(crm, settings, command):
    samples = settings.BASE_DIR / "sandbox" / "mcp_servers" / "node_modules"
    settings.GATEHOUSE_MCP_COMMANDS = [f"node {samples}/"]
    program, *args = [part.format(samples=samples) for part in command]
    with pytest.raises(ValidationError) as refused:
        system_connection_set(
            system=crm,
            kind="mcp",
            config={"transport": "stdio", "command": program, "args": args},
            user=None,
            channel="command",
        )
    assert "GATEHOUSE_MCP_COMMANDS" in " ".join(refused.value.messages)
    crm.refresh_from_db()
    assert crm.connector_kind == "http"
    listed = {"transport": "stdio", "command": "node", "args": [f"{samples}/@modelcontextprotocol/server-memory/x.js"]}
    system_connection_set(system=crm, kind="mcp", config=listed, user=None, channel="command")  # below the folder


def test_a_drop_folder_must_lie_within_a_listed_root(demo, settings, tmp_path):
    inventory = System.objects.get(slug="legacy-inventory")
    settings.GATEHOUSE_DROP_ROOTS = [str(tmp_path / "drops")]
    config = dict(inventory.connector_config)
    for folder in ("/etc", str(tmp_path / "drops" / ".." / "elsewhere"), str(tmp_path / "dropsy")):
        with pytest.raises(ValidationError, match="GATEHOUSE_DROP_ROOTS"):
            system_connection_set(
                system=inventory,
                kind="legacy_batch",
                config={**config, "drop_folder": folder},
                user=None,
                channel="command",
            )
    inside = {**config, "drop_folder": str(tmp_path / "drops" / "inventory")}
    system_connection_set(system=inventory, kind="legacy_batch", config=inside, user=None, channel="command")


def test_a_handled_file_is_not_moved_through_a_subfolder_linked_outside_the_drop_root(demo, settings, tmp_path):
    """A compromised batch system that can write its drop folder swaps `processed/` for a link to elsewhere."""
    inventory = System.objects.get(slug="legacy-inventory")
    root, outside = tmp_path / "drops", tmp_path / "outside"
    (root / "inventory").mkdir(parents=True)
    outside.mkdir()
    settings.GATEHOUSE_DROP_ROOTS = [str(root)]
    config = {**inventory.connector_config, "drop_folder": str(root / "inventory")}
    system_connection_set(system=inventory, kind="legacy_batch", config=config, user=None, channel="command")
    inventory.refresh_from_db()
    (root / "inventory" / "processed").symlink_to(outside, target_is_directory=True)
    dropped = root / "inventory" / "stock.csv"
    dropped.write_text("ITEM_NO,WHSE,QTY_ON_HAND,AS_OF\n")
    with pytest.raises(PermanentError, match="outside the drop roots"):
        connector_for(inventory).move_aside(dropped, "processed", "1-stock.csv")
    assert dropped.exists() and not any(outside.iterdir())


def test_the_system_history_hides_connector_settings_from_those_who_may_not_change_them(client, crm, integrator):
    system_connection_set(
        system=crm, kind="http", config={**crm.connector_config, "timeout": 7}, user=None, channel="command"
    )
    history = url("governance_system_history", crm.pk)
    assert "Connector config" not in signed_in(client, "owner").get(history).content.decode()
    client.force_login(integrator)
    assert "Connector config" in client.get(history).content.decode()


# --- 2. Tokens are minted by the agent's owner or a superuser; owners change hands by a superuser ---------------


def test_an_operator_cannot_mint_a_token_to_act_as_an_agent(client, demo):
    agent = Agent.objects.get(slug="collections-agent")
    before = AgentToken.objects.count()
    signed_in(client, "operator").post(
        url("governance_agent_changelist"), {"action": "issue_token", "_selected_action": [agent.pk]}
    )
    assert AgentToken.objects.count() == before
    with pytest.raises(PermissionDenied):
        agent_token_issue(agent=agent, issued_by=User.objects.get(username="operator"), channel="admin")


def test_the_agents_owner_mints_a_token_that_expires_and_the_mint_is_in_the_agents_trail(client, demo):
    agent = Agent.objects.get(slug="collections-agent")
    signed_in(client, "owner").post(
        url("governance_agent_changelist"), {"action": "issue_token", "_selected_action": [agent.pk]}
    )
    token = AgentToken.objects.filter(agent=agent).latest("created_at")
    assert token.created_by.username == "owner"
    assert timezone.now() + timedelta(days=89) < token.expires_at <= timezone.now() + timedelta(days=90)
    assert AuditEvent.objects.filter(verb="token_issued", agent=agent, person__username="owner").exists()


def test_no_door_mints_a_token_for_longer_than_the_maximum(demo):
    agent = Agent.objects.get(slug="collections-agent")
    with pytest.raises(ValidationError, match="at most 365 days"):
        agent_token_issue(agent=agent, channel="command", expires_in=timedelta(days=400))


def agent_form(agent: Agent, **changes: object) -> dict[str, str]:
    """The agent's change form as a browser posts it, its (read-only) token inline included."""
    inline = {"tokens-TOTAL_FORMS": "0", "tokens-INITIAL_FORMS": "0", "tokens-MIN_NUM_FORMS": "0"}
    return as_form_data(agent, **changes) | inline | {"tokens-MAX_NUM_FORMS": "1000"}


def test_a_crafted_post_of_an_agents_owner_by_an_operator_changes_nothing_and_a_superusers_is_audited(client, demo):
    agent = Agent.objects.get(slug="collections-agent")
    thief = UserFactory(username="mallory")
    response = signed_in(client, "operator").post(
        url("governance_agent_change", agent.pk), agent_form(agent, owner=thief.pk, name="Collections")
    )
    assert response.status_code == 302  # saved: the operator may rename it, not hand it over
    agent.refresh_from_db()
    assert (agent.name, agent.owner.username) == ("Collections", "owner")

    signed_in(client, "admin").post(url("governance_agent_change", agent.pk), agent_form(agent, owner=thief.pk))
    agent.refresh_from_db()
    assert agent.owner == thief
    [event] = [e for e in AuditEvent.objects.filter(verb="configured", agent=agent) if "owner" in e.state_after]
    assert (event.state_before, event.state_after) == ({"owner": "owner"}, {"owner": "mallory"})
    assert event.person.username == "admin"


def test_a_token_limited_to_a_network_is_refused_from_elsewhere_as_unauthenticated_and_audited(client, demo):
    agent = Agent.objects.get(slug="collections-agent")
    _, raw = agent_token_issue(agent=agent, channel="command", networks=["10.9.0.0/16"])
    refused = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}", REMOTE_ADDR="127.0.0.1")
    assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
    assert AuditEvent.objects.filter(verb="denied", agent=agent, outcome="network_refused").count() == 1
    allowed = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}", REMOTE_ADDR="10.9.1.2")
    assert allowed.status_code == 200


# --- 4. Four eyes on rules, judged by the rule version a proposal was decided under ------------------------------


def test_whoever_edits_a_rule_in_the_admin_cannot_sign_it_off_but_someone_else_can(client, demo):
    rule = ThresholdRule.objects.get(name="Credit limit changes on crm")
    data = rule_change_post(rule, bands={0: {"max_amount": "800"}, 1: {"min_amount": "800"}})
    assert signed_in(client, "owner").post(url("governance_thresholdrule_change", rule.pk), data).status_code == 302
    rule.refresh_from_db()
    assert rule.edited_by.username == "owner" and not rule.is_signed_off
    with pytest.raises(PermissionDenied, match="four eyes"):
        threshold_rule_sign_off(rule=rule, user=User.objects.get(username="owner"), channel="admin")
    threshold_rule_sign_off(rule=rule, user=User.objects.get(username="admin"), channel="admin")
    rule.refresh_from_db()
    assert rule.is_signed_off


# --- 8. A kill switch is released by its puller's rank or above ---------------------------------------------------


def test_an_owner_cannot_release_the_switch_an_operator_pulled_on_their_agent(demo):
    agent = Agent.objects.get(slug="collections-agent")
    operator, owner = User.objects.get(username="operator"), User.objects.get(username="owner")
    kill_switch_on(target=SwitchTarget(agent=agent), reason="incident 7", user=operator, channel="admin")
    with pytest.raises(PermissionDenied, match="only someone of that rank or above"):
        kill_switch_off(target=SwitchTarget(agent=agent), reason="looks fine to me", user=owner, channel="admin")
    agent.refresh_from_db()
    assert agent.status == "disabled"
    kill_switch_off(target=SwitchTarget(agent=agent), reason="incident 7 closed", user=operator, channel="admin")


def test_an_owner_who_stopped_their_own_agent_may_let_it_go_again(demo):
    agent = Agent.objects.get(slug="collections-agent")
    owner = User.objects.get(username="owner")
    kill_switch_on(target=SwitchTarget(agent=agent), reason="testing a prompt", user=owner, channel="admin")
    result = kill_switch_off(target=SwitchTarget(agent=agent), reason="done", user=owner, channel="admin")
    assert result.changed
