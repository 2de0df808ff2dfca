"""Admin roles as Django groups, with the model permissions each role needs. Object-level limits are in querysets."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType

from governance.choices import Role

INVENTORY = [
    ("governance", "system"),
    ("governance", "resource"),
    ("governance", "actiontype"),
    ("governance", "agent"),
    ("governance", "agenttoken"),
    ("governance", "scopegrant"),
    ("governance", "agentbudget"),
    ("governance", "thresholdrule"),
    ("governance", "thresholdband"),
    ("connectors", "credential"),
    ("connectors", "agentcredential"),
]
# A system's connector settings: their own page and permissions (governance.SystemConnection, a proxy of System).
CONNECTIONS = ("governance", "systemconnection")
AUDIT = [("audit", "auditevent"), ("audit", "auditverification"), ("audit", "auditcheckpoint")]
PROPOSALS = [("approvals", "proposal")]
ROLLBACK = [("approvals", "reversal"), ("approvals", "reversalstep"), ("approvals", "drill")]
# What batch systems delivered: files, quarantined rows, polling state (read-only for everyone in the admin).
BATCH = [("connectors", "batchfile"), ("connectors", "quarantinedrow"), ("connectors", "batchpoll")]
# Outbound webhooks: where governance events go, and what was sent (webhooks/; named, not imported: it sits above).
WEBHOOKS = [("webhooks", "subscription"), ("webhooks", "delivery")]


def _view(models: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    return [(app, "view", model) for app, model in models]


def _edit(models: list[tuple[str, str]], *actions: str) -> list[tuple[str, str, str]]:
    return [(app, action, model) for app, model in models for action in actions]


ROLE_PERMISSIONS: dict[str, list[tuple[str, str, str]]] = {
    # Owners write the terms for their own systems (querysets limit them to those); they read everything else.
    Role.BUSINESS_OWNERS: _view(INVENTORY + AUDIT + PROPOSALS + ROLLBACK + BATCH)
    + _edit(
        [
            ("governance", "resource"),
            ("governance", "actiontype"),
            ("governance", "scopegrant"),
            ("governance", "thresholdrule"),
            ("governance", "thresholdband"),
            # An agent's budgets: its owner's (querysets and governance.services.may_set_budget limit them to those).
            ("governance", "agentbudget"),
        ],
        "add",
        "change",
        "delete",
    )
    + _edit([("governance", "system"), ("connectors", "credential")], "change")
    # An agent's own account at their system: set, rotated and retired by the system's owner.
    + _edit([("connectors", "agentcredential")], "add", "change", "delete"),
    # Deciding is not a model permission: the services check who may decide each proposal.
    Role.APPROVERS: _view(INVENTORY + PROPOSALS),
    Role.REVIEWERS: _view(INVENTORY + PROPOSALS),
    Role.AUDITORS: _view(INVENTORY + AUDIT + PROPOSALS + ROLLBACK + BATCH + WEBHOOKS),
    # Operators pull kill switches, reverse writes and run drills (the services check on which targets). They also
    # run the webhooks their on-call tools receive: subscriptions (within the allow-list, audited) and the replay of
    # parked deliveries (change_delivery). Subscriptions are switched off, never deleted.
    Role.OPERATORS: _view(INVENTORY + AUDIT + PROPOSALS + ROLLBACK + BATCH + WEBHOOKS)
    + _edit([("governance", "system"), ("governance", "agent")], "change")
    + _edit([("webhooks", "subscription")], "add", "change")
    + _edit([("webhooks", "delivery")], "change"),
    # Integrators set what each connector runs and where it connects (within the environment's allow-lists): the
    # connector settings page only, audited there. They change nothing else.
    Role.INTEGRATORS: _view(INVENTORY) + _edit([CONNECTIONS], "view", "change"),
}


def ensure_roles() -> dict[str, Group]:
    """Create the role groups and give each exactly its permissions (idempotent)."""
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.contenttypes.management import create_contenttypes

    # post_migrate runs app by app: make sure every app's permissions exist before assigning them.
    for app_config in apps.get_app_configs():
        create_contenttypes(app_config, verbosity=0)
        create_permissions(app_config, verbosity=0)
    groups: dict[str, Group] = {}
    for role, wanted in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        permissions = []
        for app_label, action, model in wanted:
            content_type = ContentType.objects.get_by_natural_key(app_label, model)
            permissions.append(Permission.objects.get(content_type=content_type, codename=f"{action}_{model}"))
        group.permissions.set(permissions)
        groups[role] = group
    return groups
