"""The README's permissions matrix is the code's: each cell is computed here from the services and permissions the
doors use, and compared with the table as the README prints it (between its two markers)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from approvals.killswitch import SwitchTarget, may_pull
from connectors.models import Credential
from connectors.services import may_hold_secrets
from governance.choices import Role
from governance.models import Agent, System, ThresholdRule
from governance.querysets import OwnedQuerySet
from governance.services import (
    may_configure_connections,
    may_hand_over,
    may_mint_tokens,
    may_revoke_tokens,
    may_sign_off,
)
from tests.factories import AgentFactory, SystemFactory, ThresholdRuleFactory, UserFactory

pytestmark = pytest.mark.django_db
User = get_user_model()
README = Path(__file__).resolve().parents[2] / "README.md"
ROLES = ["owner", "approver", "reviewer", "auditor", "operator", "integrator", "superuser"]


def scope(own: bool, others: bool) -> str:
    return "yes" if own and others else "own" if own else "—"


def editable(queryset: OwnedQuerySet, user, own: object, other: object) -> str:
    rows = queryset.editable_by(user)
    return scope(rows.filter(pk=own.pk).exists(), rows.filter(pk=other.pk).exists())


def member(user, role: Role) -> str:
    return "assigned" if user.groups.filter(name=role).exists() else "—"


ROWS: dict[str, Callable[..., str]] = {
    "Read the inventory (systems, agents, grants, rules)": lambda u, w: (
        "yes" if u.has_perm("governance.view_system") else "—"
    ),
    "Read the audit trail and export it": lambda u, w: "yes" if u.has_perm("audit.view_auditevent") else "—",
    "Change a system's people, write mode and limits": lambda u, w: (
        editable(System.objects, u, w.crm, w.other_system) if u.has_perm("governance.change_system") else "—"
    ),
    "Change a system's connector settings": lambda u, w: "yes" if may_configure_connections(u) else "—",
    "Edit resources, actions, grants and threshold rules": lambda u, w: (
        editable(ThresholdRule.objects, u, w.rule, w.other_rule)
        if u.has_perm("governance.change_thresholdrule")
        else "—"
    ),
    "Sign off a threshold rule (never the rule's last editor)": lambda u, w: scope(
        may_sign_off(u, w.rule), may_sign_off(u, w.other_rule)
    ),
    "Set or rotate a system's vaulted credential": lambda u, w: (
        editable(Credential.objects, u, w.credential, w.other_credential)
        if u.has_perm("connectors.change_credential")
        else "—"
    ),
    "Set, rotate or remove an agent's own credential at a system": lambda u, w: (
        scope(may_hold_secrets(u, w.crm), may_hold_secrets(u, w.other_system))
        if u.has_perm("connectors.add_agentcredential") and u.has_perm("connectors.change_agentcredential")
        else "—"
    ),
    "Issue an agent's tokens": lambda u, w: scope(may_mint_tokens(u, w.agent), may_mint_tokens(u, w.other_agent)),
    "Revoke an agent's tokens": lambda u, w: scope(may_revoke_tokens(u, w.agent), may_revoke_tokens(u, w.other_agent)),
    "Hand a system or an agent to another owner": lambda u, w: "yes" if may_hand_over(u) else "—",
    "Approve or reject a proposal (never the agent's owner or the rule's editor)": lambda u, w: member(
        u, Role.APPROVERS
    ),
    "Second review of a dual-band proposal (never its approver)": lambda u, w: member(u, Role.REVIEWERS),
    "Pull a kill switch, reverse writes, run a drill": lambda u, w: scope(
        may_pull(u, SwitchTarget(agent=w.agent)), may_pull(u, SwitchTarget(agent=w.other_agent))
    ),
    "Override the readiness gate (with a reason)": lambda u, w: "yes" if u.is_superuser else "—",
}


class World:
    """The demo's crm and collections-agent (owned by `owner`), and one system, rule and agent owned by someone else."""

    def __init__(self) -> None:
        stranger = UserFactory(username="stranger", roles=[Role.BUSINESS_OWNERS])
        self.crm = System.objects.get(slug="crm")
        self.other_system = SystemFactory(slug="elsewhere", owner=stranger)
        self.rule = ThresholdRule.objects.get(system=self.crm, action_type__name="update_credit_limit")
        self.other_rule = ThresholdRuleFactory(system=self.other_system)
        self.credential = Credential.objects.get(system=self.crm)
        self.other_credential = Credential(system=self.other_system)
        self.other_credential.encrypt_secret("another-secret")
        self.other_credential.save()
        self.agent = Agent.objects.get(slug="collections-agent")
        self.other_agent = AgentFactory(slug="elsewhere-agent", owner=stranger)


def people() -> dict[str, object]:
    users = {name: User.objects.get(username=name) for name in ("owner", "approver", "reviewer", "auditor")}
    users["operator"] = User.objects.get(username="operator")
    users["integrator"] = UserFactory(username="ines", roles=[Role.INTEGRATORS])
    users["superuser"] = User.objects.get(username="admin")
    return users


def readme_matrix() -> dict[str, list[str]]:
    text = README.read_text()
    table = text.split("<!-- permissions-matrix -->", 2)[1]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[re.sub(r"\*\*|`", "", cells[0])] = cells[1:8]
    return rows


def test_every_cell_of_the_readmes_permissions_matrix_is_what_the_code_does(demo):
    world, users = World(), people()
    computed = {row: [check(users[role], world) for role in ROLES] for row, check in ROWS.items()}
    assert readme_matrix() == computed
