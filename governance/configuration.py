"""Configuration in the trail: what a person changed on a governed object, field by field, before and after.

`configuration_change` is the one path for every door that changes what governs an agent or a system (the admin's
`ConfiguredAdminMixin`, management commands): it compares a snapshot taken before the save with one taken after,
writes one `configured` event attached to the agent and/or system the object governs, with the person and the
reason, and writes nothing when no field changed. Secrets never enter a snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import models
from django.utils.duration import duration_string

from audit.changes import configuration_text
from audit.choices import Channel, Verb
from audit.models import AuditEvent
from audit.services import audit_record
from governance.models import Agent, System
from governance.services import redacted_config

REDACTED = "(secret, not recorded)"
# Never recorded, whatever model they are on: a snapshot says a secret changed, never what it is.
SECRET_FIELDS = frozenset({"ciphertext", "token_hash", "password", "secret", "secret_hash", "api_key"})
# Bookkeeping a person does not set: recorded by the events of their own acts (sign-off), or noise.
IGNORED_FIELDS = frozenset({"edited_by", "signed_off_by", "signed_off_at", "signed_off_digest", "last_used_at"})


@dataclass
class Snapshot:
    """An object's fields as the trail keeps them, with its children (a rule's bands) keyed by label."""

    label: str
    fields: dict[str, Any]
    children: dict[str, dict[str, Any]] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, timedelta):
        return duration_string(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def field_values(obj: models.Model, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Each concrete field of `obj` in readable, JSON-able form: a foreign key as the related row's name (a person's
    username, a system's slug), secrets redacted, the primary key and bookkeeping left out."""
    skipped = IGNORED_FIELDS | set(exclude)
    values: dict[str, Any] = {}
    for model_field in obj._meta.concrete_fields:
        name = model_field.name
        if model_field.primary_key or name in skipped or getattr(model_field, "auto_now", False):
            continue
        if getattr(model_field, "auto_now_add", False) or getattr(model_field, "parent_link", False):
            continue
        if name in SECRET_FIELDS or name.endswith(("_secret", "_password")):
            values[name] = REDACTED
        elif model_field.is_relation:
            related = getattr(obj, name, None)
            values[name] = None if related is None else _related_name(related)
        else:
            values[name] = _plain(redacted_config(getattr(obj, model_field.attname)))
    return values


def _related_name(related: models.Model) -> str:
    if isinstance(related, User):
        return related.get_username()
    return str(getattr(related, "slug", None) or related)


def snapshot(obj: models.Model, *, children: Iterable[str] = (), exclude: Iterable[str] = ()) -> Snapshot:
    """`obj` as stored now (read again from the database, so a form's unsaved values never count)."""
    stored = type(obj)._default_manager.filter(pk=obj.pk).first() if obj.pk is not None else None
    if stored is None:
        return Snapshot(label=str(obj), fields={})
    kids: dict[str, dict[str, Any]] = {}
    for name in children:
        for child in getattr(stored, name).all():
            kids[f"{child._meta.verbose_name} #{child.pk}"] = field_values(child, exclude=_parent_keys(child, stored))
    return Snapshot(label=str(stored), fields=field_values(stored, exclude=exclude), children=kids)


def _parent_keys(child: models.Model, parent: models.Model) -> list[str]:
    return [f.name for f in child._meta.concrete_fields if f.is_relation and f.related_model is type(parent)]


@dataclass
class Changes:
    """What differs between two snapshots: per field (before, after), per child added / changed / deleted."""

    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    children: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.fields or self.children)


def diff(before: Snapshot | None, after: Snapshot | None) -> Changes:
    """Field-level changes; a whole object added (before None) or deleted (after None) lists every field."""
    old_fields = before.fields if before else {}
    new_fields = after.fields if after else {}
    changes = Changes()
    for name in dict.fromkeys([*old_fields, *new_fields]):
        old, new = old_fields.get(name), new_fields.get(name)
        if old != new or (before is None) != (after is None):
            changes.fields[name] = (old, new)
    old_kids = before.children if before else {}
    new_kids = after.children if after else {}
    for label in dict.fromkeys([*old_kids, *new_kids]):
        old_kid, new_kid = old_kids.get(label), new_kids.get(label)
        if old_kid is None or new_kid is None:
            changes.children[label] = (old_kid, new_kid)
            continue
        changed = [name for name in new_kid if old_kid.get(name) != new_kid[name]]
        if changed:
            changes.children[label] = ({n: old_kid.get(n) for n in changed}, {n: new_kid[n] for n in changed})
    return changes


def governed_by(obj: models.Model) -> tuple[Agent | None, System | None]:
    """The agent and the system whose trail a change of `obj` belongs to: itself, or its `agent` / `system` (a
    grant: both), or its rule's system (a band). A model of another helper with these foreign keys needs nothing."""
    if isinstance(obj, Agent):
        return obj, None
    if isinstance(obj, System):
        return None, obj
    agent = getattr(obj, "agent", None)
    system = getattr(obj, "system", None)
    rule = getattr(obj, "rule", None)
    if system is None and rule is not None:
        system = getattr(rule, "system", None)
    return (agent if isinstance(agent, Agent) else None), (system if isinstance(system, System) else None)


def configuration_change(
    *,
    obj: models.Model,
    before: Snapshot | None,
    after: Snapshot | None,
    user: User | None,
    channel: Channel | str,
    reason: str = "",
) -> AuditEvent | None:
    """One `configured` event for a person's change of `obj` (added: `before` None; deleted: `after` None), or
    nothing when no field changed. Call inside the transaction of the change itself."""
    changes = diff(before, after)
    if not changes:
        return None
    agent, system = governed_by(obj)
    what = str(obj._meta.verbose_name)
    label = (after or before).label if (after or before) else str(obj)  # type: ignore[union-attr]
    action = "added" if before is None else "deleted" if after is None else "changed"
    who = (user.get_full_name() or user.get_username()) if user else "An operator (command line)"
    reason = reason.strip()
    state_before: dict[str, Any] = {name: old for name, (old, _) in changes.fields.items()}
    state_after: dict[str, Any] = {name: new for name, (_, new) in changes.fields.items()}
    for child, (old_kid, new_kid) in changes.children.items():
        state_before[child], state_after[child] = old_kid, new_kid
    state_before_or_none = None if before is None else state_before
    state_after_or_none = None if after is None else state_after
    summary = configuration_text(
        who=who,
        action=action,
        what=what,
        name=label,
        before=state_before_or_none,
        after=state_after_or_none,
        reason=reason,
    )
    return audit_record(
        verb=Verb.CONFIGURED,
        actor=user,
        channel=channel,
        agent=agent,
        system=system,
        resource=obj._meta.model_name or "",
        input={"object": what, "object_id": obj.pk, "name": label, "action": action, "reason": reason},
        state_before=state_before_or_none,
        state_after=state_after_or_none,
        summary=summary + ".",
    )
