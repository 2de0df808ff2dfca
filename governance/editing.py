"""A person's changes of the inventory's terms outside the admin's forms, checked as the admin checks them.

The admin lets a person add, change or delete a row when they hold the model permission and, for a row that exists,
the row is theirs to edit (`editable_by`); a new row may only hang under a system (or an agent) they may edit
(`OwnedAdminMixin.owned_choice_fields`). The questions here are the same ones, and the services write the same
`configured` event (governance/configuration.py) as the admin's `ConfiguredAdminMixin`: so a command such as
apply_policy is no wider a door than the admin.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction

from audit.choices import Channel
from governance.configuration import configuration_change, snapshot
from governance.models import Agent, System, ThresholdBand, ThresholdRule, validate_bands


def _perm(user: User, action: str, model: type[models.Model]) -> bool:
    return user.is_active and user.has_perm(f"{model._meta.app_label}.{action}_{model._meta.model_name}")


def may_edit_under(user: User, parent: System | Agent) -> bool:
    """Whether a row may hang under `parent`: a superuser anywhere, anyone else only under what they may edit (as the
    admin limits a form's choices of system and agent)."""
    if user.is_superuser:
        return True
    return type(parent).objects.editable_by(user).filter(pk=parent.pk).exists()


def may_save(user: User, obj: models.Model, *, parents: Iterable[System | Agent] = ()) -> bool:
    """The admin's answer for saving `obj` (added when it has no primary key yet): the model permission, the stored
    row editable by `user`, and each parent it hangs under editable by them too."""
    model = type(obj)
    if obj.pk is None:
        allowed = _perm(user, "add", model)
    else:
        stored = model._default_manager.filter(pk=obj.pk)
        allowed = _perm(user, "change", model) and stored.editable_by(user).exists()  # type: ignore[attr-defined]
    return allowed and all(may_edit_under(user, parent) for parent in parents)


def may_delete(user: User, obj: models.Model) -> bool:
    model = type(obj)
    editable = model._default_manager.filter(pk=obj.pk).editable_by(user).exists()  # type: ignore[attr-defined]
    return _perm(user, "delete", model) and editable


def _refuse(user: User, verb: str, obj: models.Model) -> PermissionDenied:
    return PermissionDenied(f"{user.get_username()} may not {verb} {obj._meta.verbose_name} {obj}: in the admin too.")


@transaction.atomic
def inventory_save(
    *,
    obj: models.Model,
    user: User,
    channel: Channel | str,
    parents: Iterable[System | Agent] = (),
    exclude: Iterable[str] = (),
    reason: str = "",
    origin: str = "",
) -> models.Model:
    """Add or change one row of the inventory as `user`, validated by the model (`full_clean`) and recorded as the
    admin records it: one `configured` event, before and after. `exclude`: fields another service changes and
    audits itself (an owner: the hand-over; connector settings: `system_connection_set`)."""
    adding = obj.pk is None
    if not may_save(user, obj, parents=parents):
        raise _refuse(user, "add" if adding else "change", obj)
    before = None if adding else snapshot(obj, exclude=exclude)
    obj.full_clean()
    obj._change_reason = f"origin={origin or channel}"  # type: ignore[attr-defined]
    obj.save()
    after = snapshot(obj, exclude=() if adding else exclude)
    configuration_change(obj=obj, before=before, after=after, user=user, channel=channel, reason=reason)
    return obj


@transaction.atomic
def inventory_delete(*, obj: models.Model, user: User, channel: Channel | str, reason: str = "") -> None:
    """Delete one row of the inventory as `user`, recorded first (the admin's delete writes the same event)."""
    if not may_delete(user, obj):
        raise _refuse(user, "delete", obj)
    configuration_change(
        obj=obj, before=snapshot(obj, children=_children(obj)), after=None, user=user, channel=channel, reason=reason
    )
    obj.delete()


def _children(obj: models.Model) -> tuple[str, ...]:
    return ("bands",) if isinstance(obj, ThresholdRule) else ()


_BAND_TERMS = (
    "min_amount",
    "max_amount",
    "mode",
    "approver_id",
    "approver_group_id",
    "sla",
    "review_group_id",
    "review_timing",
    "review_within",
    "condition",
)


def _same_band(one: ThresholdBand, other: ThresholdBand) -> bool:
    return all(getattr(one, name) == getattr(other, name) for name in _BAND_TERMS)


@transaction.atomic
def threshold_rule_save(
    *,
    rule: ThresholdRule,
    bands: list[ThresholdBand],
    user: User,
    channel: Channel | str,
    reason: str = "",
    origin: str = "",
) -> ThresholdRule:
    """Add or change a threshold rule and make its bands exactly `bands` (unsaved rows), as the admin's rule page does:
    the rule and each band validated, the bands together (`validate_bands`), the editor recorded in `edited_by` (four
    eyes: they never sign it off), and one `configured` event with the bands' changes. A changed rule is out of force
    until signed off again: its sign-off digest no longer matches, as after an edit in the admin.

    Stored bands whose terms are unchanged are kept as they are; the others are changed in place, added or deleted.
    """
    adding = rule.pk is None
    if not may_save(user, rule, parents=[rule.system]):
        raise _refuse(user, "add" if adding else "change", rule)
    band_actions = {"add", "change", "delete"} if not adding else {"add"}
    if not all(_perm(user, action, ThresholdBand) for action in band_actions):
        raise PermissionDenied(f"{user.get_username()} may not change the bands of threshold rules.")
    before = None if adding else snapshot(rule, children=("bands",))
    rule.full_clean()
    rule.edited_by = user
    rule._change_reason = f"origin={origin or channel}"  # type: ignore[attr-defined]
    rule.save()
    stored = list(rule.bands.order_by("min_amount", "pk")) if not adding else []
    kept = [band for band in bands if any(_same_band(band, old) for old in stored)]
    for band in kept:
        stored.remove(next(old for old in stored if _same_band(band, old)))
    for band in bands:
        if band in kept:
            continue
        if stored:  # changed in place: its history continues
            band.pk, band._state.adding = stored.pop(0).pk, False
        band.rule = rule
        band.full_clean()
        band._change_reason = rule._change_reason  # type: ignore[attr-defined]
        band.save()
    for old in stored:
        old.delete()
    problems = _bands_problems(rule)
    if problems:
        raise ValidationError(problems)
    configuration_change(
        obj=rule,
        before=before,
        after=snapshot(rule, children=("bands",)),
        user=user,
        channel=channel,
        reason=reason,
    )
    return rule


def _bands_problems(rule: ThresholdRule) -> list[str]:
    try:
        validate_bands([band.spec() for band in rule.bands.all()], action=rule.action_type)
    except ValidationError as exc:
        return [f"{rule.name}: {message}" for message in exc.messages]
    return []
