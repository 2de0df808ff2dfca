"""The demo inventory of CONTRACT.md, built idempotently: running it twice leaves one copy of everything.

Seeding makes what is missing and leaves what exists as it finds it, except where a sample system's connector points
(console/demo_connections.py: it follows the port settings, unless someone pointed it elsewhere).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, User
from django.db import transaction

from audit.choices import Channel
from connectors.models import Credential
from connectors.services import credential_set
from console.demo_connections import SEED_ORIGIN, Say, Target, connection_point, crm_target, where
from governance.choices import (
    Access,
    BandMode,
    Compensation,
    ConnectorKind,
    CumulativeScope,
    Environment,
    ImpactKind,
    IntegrationPattern,
    ReviewTiming,
    Role,
    SystemCategory,
    WriteMode,
)
from governance.models import ActionType, Agent, Resource, ScopeGrant, System, ThresholdBand, ThresholdRule
from governance.roles import ensure_roles
from governance.services import threshold_rule_sign_off

DEMO_USERS = [
    # username, full name, role, superuser, their job in the demo (the banner shows it beside the password)
    ("owner", "Olivia Owner", Role.BUSINESS_OWNERS, False, "signs off the CRM's threshold rules"),
    ("approver", "Dana Approver", Role.APPROVERS, False, "decides proposals in the approval queue"),
    ("reviewer", "Riley Reviewer", Role.REVIEWERS, False, "second look at raises above 5,000 USD"),
    ("auditor", "Casey Auditor", Role.AUDITORS, False, "reads the audit trail; changes nothing"),
    ("operator", "Omar Operator", Role.OPERATORS, False, "kill switches, reversals, rollback drills"),
    ("admin", "Ada Admin", None, True, "superuser: can do everything"),
]
DEMO_JOBS = {username: job for username, *_, job in DEMO_USERS}

ACCOUNT_FIELDS = ["name", "email", "status", "credit_limit", "notes"]
DECIMAL_PATTERN = r"^\d{1,12}(\.\d{1,2})?$"

CRM_ACTIONS = {
    "update_credit_limit": {
        "description": "Set the account's credit limit (USD).",
        "payload_schema": {
            "type": "object",
            "properties": {
                "credit_limit": {
                    "type": "string",
                    "pattern": DECIMAL_PATTERN,
                    "description": 'The new limit in USD, as a decimal string such as "7500.00".',
                }
            },
            "required": ["credit_limit"],
            "additionalProperties": False,
        },
        "impact_kind": ImpactKind.DELTA,
        "impact_field": "credit_limit",
        "preconditions": ["record_exists"],
        "operation": {"method": "PATCH", "path": "/accounts/{record_id}", "fields": ["credit_limit"]},
        "compensation": Compensation.RESTORE_FIELDS,
    },
    "add_note": {
        "description": "Add a note to the account.",
        "payload_schema": {
            "type": "object",
            "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 2000}},
            "required": ["text"],
            "additionalProperties": False,
        },
        "preconditions": ["record_exists"],
        "operation": {"method": "POST", "path": "/accounts/{record_id}/notes", "created": "note"},
        "compensation": Compensation.DELETE_CREATED,
    },
    "set_status": {
        "description": "Set the account's status.",
        "payload_schema": {
            "type": "object",
            "properties": {"status": {"type": "string", "enum": ["active", "on_hold", "closed"]}},
            "required": ["status"],
            "additionalProperties": False,
        },
        "preconditions": ["record_exists"],
        "operation": {"method": "PATCH", "path": "/accounts/{record_id}", "fields": ["status"]},
        "compensation": Compensation.RESTORE_FIELDS,
    },
    "send_statement": {
        "description": "E-mail the account its statement.",
        "payload_schema": {
            "type": "object",
            "properties": {"period": {"type": "string", "maxLength": 40}},
            "additionalProperties": False,
        },
        "preconditions": ["record_exists"],
        "operation": {"method": "POST", "path": "/accounts/{record_id}/statements"},
        "compensation": Compensation.NONE,
        "not_reversible_note": "A statement e-mail that has been sent cannot be unsent.",
    },
}


@dataclass
class SeedReport:
    created: list[str] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)
    # Where seeding pointed a sample system, moved it, or left it as someone set it: one line each.
    connections: list[str] = field(default_factory=list)


def _passwords_file() -> Path:
    return Path(settings.VAR_DIR) / "demo-users.json"


def demo_passwords() -> dict[str, str]:
    """The demo users' passwords as seed_demo last set them (a development-only file, mode 600)."""
    if not _passwords_file().exists():
        return {}
    return json.loads(_passwords_file().read_text())


COLLECTIONS_AGENT = "collections-agent"  # the demo agent that writes: it has its own account at the sample CRMs


def sandbox_token_file(slug: str) -> Path:
    return Path(settings.VAR_DIR) / "sandbox" / f"{slug}.token"


def _sandbox_accounts(slug: str) -> tuple[str, dict[str, str]]:
    """The sample system's accounts, shared with its process through a file under var/ (mode 600): the service
    account's token on the first line, then `AGENT TOKEN` for each demo agent that has an account of its own (made
    here for the collections agent, the one that writes). Returns (service token, {agent slug: token})."""
    path = sandbox_token_file(slug)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(f"{secrets.token_urlsafe(32)}\n{COLLECTIONS_AGENT} {secrets.token_urlsafe(32)}\n")
        path.chmod(0o600)
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    agents = dict(line.split(" ", 1) for line in lines[1:])
    return lines[0], {slug: token.strip() for slug, token in agents.items()}


def _users(report: SeedReport, reset_passwords: bool) -> dict[str, User]:
    User = get_user_model()
    groups = ensure_roles()
    stored: dict[str, str] = {}
    if _passwords_file().exists():
        stored = json.loads(_passwords_file().read_text())
    users = {}
    for username, full_name, role, superuser, _ in DEMO_USERS:
        first, last = full_name.split(" ", 1)
        user, created = User.objects.get_or_create(
            username=username,
            defaults={"first_name": first, "last_name": last, "email": f"{username}@gatehouse.example"},
        )
        user.is_staff = True
        user.is_superuser = superuser
        if created or reset_passwords or username not in stored:
            stored[username] = secrets.token_urlsafe(12)
            user.set_password(stored[username])
            if created:
                report.created.append(f"user {username}")
        user.save()
        if role:
            user.groups.add(groups[role])
        users[username] = user
    _passwords_file().parent.mkdir(parents=True, exist_ok=True)
    _passwords_file().write_text(json.dumps(stored, indent=2))
    _passwords_file().chmod(0o600)
    report.passwords = stored
    return users


# The warehouse system's nightly export: its own column names, mapped to the event fields agents read.
LEGACY_INVENTORY_CONFIG = {
    "every": 60,
    "format": "csv",
    "columns": {"ITEM_NO": "sku", "WHSE": "warehouse", "QTY_ON_HAND": "quantity", "AS_OF": "as_of"},
    "record_id": ["sku", "warehouse"],
    "version": "as_of",
    "types": {"quantity": "int", "as_of": "date"},
}


def _legacy_drop_folder() -> Path:
    """var/legacy-inventory/drop, made here so a file can be dropped as soon as the demo runs."""
    folder = Path(settings.VAR_DIR) / "legacy-inventory" / "drop"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _system(report: SeedReport, slug: str, target: Target, **fields: Any) -> System:
    """The system as it is, or made with `fields` and pointed at `target`; only its connector may move."""
    system = System.objects.filter(slug=slug).first()
    if system is not None:
        said = connection_point(system, target)
        if said:
            report.connections.append(said)
        return system
    system = System(slug=slug, connector_kind=target.kind, connector_config=target.config, **fields)
    system._change_reason = f"origin={SEED_ORIGIN}"  # type: ignore[attr-defined]
    system.save()
    report.created.append(f"system {slug}")
    report.connections.append(f"{slug} points at {where(target.config)} ({target.because}).")
    return system


def _crm_like(report: SeedReport, system: System, owner, approver, reviewers: Group) -> Resource:
    accounts, _ = Resource.objects.update_or_create(
        system=system, name="accounts", defaults={"label": "account", "fields": ACCOUNT_FIELDS}
    )
    actions = {}
    for name, spec in CRM_ACTIONS.items():
        defaults = {"resource": accounts, **spec}
        actions[name], created = ActionType.objects.update_or_create(system=system, name=name, defaults=defaults)
        if created:
            report.created.append(f"action {system.slug}.{name}")

    def rule(action: ActionType | None, name: str, bands: list[dict], **terms: Any) -> None:
        threshold, created = ThresholdRule.objects.get_or_create(
            system=system, action_type=action, defaults={"name": name, "currency": "USD", **terms}
        )
        if created:
            report.created.append(f"rule {name}")
        if not threshold.bands.exists():
            for band in bands:
                ThresholdBand.objects.create(rule=threshold, **band)
        if not threshold.is_signed_off:
            threshold_rule_sign_off(rule=threshold, user=owner, channel=Channel.COMMAND)

    money_bands = [
        {"min_amount": Decimal(0), "max_amount": Decimal(500), "mode": BandMode.AUTO},
        {
            "min_amount": Decimal(500),
            "max_amount": Decimal(5000),
            "mode": BandMode.SINGLE,
            "approver": approver,
            "sla": timedelta(hours=4),
        },
        {
            "min_amount": Decimal(5000),
            "max_amount": None,
            "mode": BandMode.DUAL,
            "approver": approver,
            "sla": timedelta(hours=4),
            "review_group": reviewers,
            "review_timing": ReviewTiming.AFTER_EXECUTION,
            "review_within": timedelta(hours=24),
        },
    ]
    # Twenty $300 raises on one account in a day are judged as the $6,000 they add up to.
    rule(
        actions["update_credit_limit"],
        f"Credit limit changes on {system.slug}",
        money_bands,
        cumulative_scope=CumulativeScope.RECORD,
        cumulative_window=timedelta(hours=24),
    )
    # Closing an account needs two people; any other status one.
    rule(
        actions["set_status"],
        f"Status changes on {system.slug}",
        [
            {"min_amount": Decimal(0), "mode": BandMode.SINGLE, "approver": approver, "sla": timedelta(hours=4)},
            {**money_bands[2], "min_amount": Decimal(0), "condition": {"status": "closed"}},
        ],
    )
    rule(None, f"Default for {system.slug}", money_bands)
    return accounts


def _credentials(system: System, admin) -> None:
    """The system's shared credential, and each demo agent's own account at it (so the CRM's log names the agent)."""
    service, agents = _sandbox_accounts(system.slug)
    if not Credential.objects.filter(system=system).exists():
        credential_set(
            system=system, secret=service, actor=admin, channel=Channel.COMMAND, rotation_interval=timedelta(days=90)
        )
    for agent in Agent.objects.filter(slug__in=agents).exclude(credentials__system=system):
        credential_set(
            system=system,
            agent=agent,
            secret=agents[agent.slug],
            actor=admin,
            channel=Channel.COMMAND,
            rotation_interval=timedelta(days=90),
        )


def _grant(agent: Agent, resource: Resource, access: str, granted_by, **terms) -> None:
    ScopeGrant.objects.update_or_create(
        agent=agent,
        system=resource.system,
        resource=resource,
        access=access,
        defaults={"granted_by": granted_by, **terms},
    )


@transaction.atomic
def seed_demo(
    *, crm_url: str | None = None, crm_staging_url: str | None = None, reset_passwords: bool = False
) -> SeedReport:
    """Build (or bring back) the demo inventory: users, the sample CRM and its staging twin, the legacy inventory,
    their rules and credentials, two agents and their grants. Idempotent: a second run creates nothing new.

    The CRMs' URLs, when given, replace whatever their systems point at; when not, the port settings decide, and
    connector settings someone changed stay (console/demo_connections.py). `report.connections` says what moved or
    stayed."""
    report = SeedReport()
    users = _users(report, reset_passwords)
    owner, approver, admin = users["owner"], users["approver"], users["admin"]
    reviewers = Group.objects.get(name=Role.REVIEWERS)
    crm, staging = _crm_systems(
        report, owner, crm=crm_target("crm", crm_url), staging=crm_target("crm-staging", crm_staging_url)
    )
    legacy = _legacy_inventory(report, owner)
    accounts = _crm_like(report, crm, owner, approver, reviewers)
    _crm_like(report, staging, owner, approver, reviewers)
    events, _ = Resource.objects.update_or_create(
        system=legacy,
        name="events",
        defaults={"label": "stock event", "fields": ["sku", "warehouse", "quantity", "as_of"]},
    )
    collections, reporting = _agents(report, owner)
    for system in (crm, staging):
        _credentials(system, admin)
    _grants(collections, reporting, accounts, events, owner)
    return report


def _crm_systems(report: SeedReport, owner, *, crm: Target, staging: Target) -> tuple[System, System]:
    """The sample CRM and its staging twin, which is made first: the CRM names it as its twin."""
    common = {
        "category": SystemCategory.RECORD,
        "integration_pattern": IntegrationPattern.DIRECT_API,
        "record_of": "customer accounts and credit limits",
        "conflict_winner": "The CRM wins: a value changed in the CRM is never overwritten by Gatehouse.",
        "owner": owner,
        "rollback_contact": "Sam Rivera, CRM team, +1 555 0100",
        "oncall_contact": "crm-oncall@gatehouse.example",
        "write_mode": WriteMode.ENABLED,
    }
    twin = _system(
        report,
        "crm-staging",
        staging,
        name="Sample CRM (staging)",
        description="Staging twin of the sample CRM, for rollback drills.",
        environment=Environment.STAGING,
        drill_record_id="4471",
        **common,
    )
    system = _system(
        report,
        "crm",
        crm,
        name="Sample CRM",
        description="The sample CRM (sandbox/crm.py): system of record for customer accounts.",
        environment=Environment.PRODUCTION,
        staging_twin=twin,
        **common,
    )
    return system, twin


def _legacy_inventory(report: SeedReport, owner) -> System:
    """The nightly batch system: read-only, its data arrives as events from files dropped in a folder."""
    config = LEGACY_INVENTORY_CONFIG | {"drop_folder": str(_legacy_drop_folder())}
    return _system(
        report,
        "legacy-inventory",
        Target(ConnectorKind.LEGACY_BATCH, config, "its drop folder under var/", Say.SETTING),
        name="Legacy inventory (batch)",
        description="A nightly batch system: CSV files dropped in a folder, polled into the event queue.",
        category=SystemCategory.RECORD,
        environment=Environment.PRODUCTION,
        integration_pattern=IntegrationPattern.EVENT_QUEUE,
        record_of="stock levels per warehouse",
        conflict_winner="The batch system wins.",
        owner=owner,
        rollback_contact="Warehouse IT, +1 555 0101",
        oncall_contact="warehouse-it@gatehouse.example",
        write_mode=WriteMode.READ_ONLY,
    )


def _agents(report: SeedReport, owner) -> tuple[Agent, Agent]:
    """The collections agent (reads and proposes) and the reporting agent (reads only)."""
    agents = {}
    for slug, name, description in [
        ("collections-agent", "Collections agent", "Chases overdue accounts and adjusts credit limits."),
        ("reporting-agent", "Reporting agent", "Reads accounts for weekly reports; writes nothing."),
    ]:
        agents[slug], created = Agent.objects.update_or_create(
            slug=slug, defaults={"name": name, "description": description, "owner": owner}
        )
        if created:
            report.created.append(f"agent {slug}")
    return agents["collections-agent"], agents["reporting-agent"]


def _grants(collections: Agent, reporting: Agent, accounts: Resource, events: Resource, owner) -> None:
    """What each agent may do, granted by the owner: no agent reads the accounts' e-mail addresses."""
    readable = [name for name in ACCOUNT_FIELDS if name != "email"]
    _grant(collections, accounts, Access.READ, owner, fields=readable, justification="Reads accounts to chase them.")
    _grant(
        collections,
        accounts,
        Access.WRITE,
        owner,
        actions=list(CRM_ACTIONS),
        justification="Adjusts limits, notes and statuses; sends statements.",
    )
    _grant(collections, events, Access.READ, owner, justification="Checks stock before promising deliveries.")
    _grant(reporting, accounts, Access.READ, owner, fields=readable, justification="Weekly account reports.")
