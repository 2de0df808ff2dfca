"""A threshold rule's change history with its bands', each line saying whether the owner's sign-off held."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.history import CHANGE_KINDS, HistoryLine, amount, field_changes, person, who
from governance.models import ThresholdBand, ThresholdRule

# The sign-off context of a line on a threshold rule's page.
SIGNED_OFF = "signed off by {signer}"
VOIDED = "sign-off voided by this edit"
RESTORED = "{signer}'s sign-off in effect again: the terms are back to those signed"
IN_EFFECT = "under {signer}'s sign-off"
VOID = "sign-off void: edited since {signer} signed off"
NOT_SIGNED_OFF = "not signed off"

# --- threshold rules and their bands --------------------------------------------------------------------------------


def band_label(band: Any) -> str:
    upper = "∞" if band.max_amount is None else amount(band.max_amount)
    return f"band {amount(band.min_amount)}–{upper}"


def _digest(rule_record: Any, band_records: Iterable[Any]) -> str:
    """The digest of the rule as it stood, computed by the model itself so this page and `is_signed_off` agree.

    The bands of that moment are handed over as a prefetch would, so `content_digest()` reads them, not today's.
    """
    rule = rule_record.instance
    bands = ThresholdBand.objects.none()
    bands._result_cache = [record.instance for record in band_records]
    bands._prefetch_done = True  # type: ignore[attr-defined]
    rule._prefetched_objects_cache = {ThresholdRule.bands.rel.cache_name: bands}
    return rule.content_digest()


def _signer(rule_record: Any) -> str:
    return person(rule_record.signed_off_by) if rule_record.signed_off_by_id else ""


def _sign_off_in_effect(rule_record: Any | None, bands: dict[int, Any]) -> bool:
    if rule_record is None or rule_record.history_type == "-" or not rule_record.signed_off_digest:
        return False
    return rule_record.signed_off_by_id is not None and rule_record.signed_off_digest == _digest(
        rule_record, bands.values()
    )


def _sign_off_context(*, before: bool, after: bool, signed_now: bool, rule_record: Any) -> str:
    signer = _signer(rule_record)
    if signed_now and after:
        return SIGNED_OFF.format(signer=signer)
    if before and not after:
        return VOIDED
    if after and not before:
        return RESTORED.format(signer=signer)
    if after:
        return IN_EFFECT.format(signer=signer)
    return VOID.format(signer=signer) if signer else NOT_SIGNED_OFF


def threshold_rule_lines(rule_records: Iterable[Any], band_records: Iterable[Any]) -> list[HistoryLine]:
    """The rule's history and its bands', interleaved by time, newest first, each line with its sign-off context.

    A sign-off holds while the rule and its bands hash to the digest it stored: the first edit after it says it
    voided it; an edit that puts back exactly the signed terms brings it back into effect, as `is_signed_off` would.
    """
    events = [(record.history_date, 0, record.history_id, record) for record in rule_records]
    events += [(record.history_date, 1, record.history_id, record) for record in band_records]
    events.sort(key=lambda event: event[:3])  # same instant: the rule first, as the admin saves it before its bands

    rule: Any | None = None
    bands: dict[int, Any] = {}
    previous_band: dict[int, Any] = {}
    lines = []
    after = False  # whether a sign-off is in effect after the event; the next event's `before`
    for _, is_band, _, record in events:
        before = after
        if is_band:
            previous = previous_band.get(record.id)
            if record.history_type == "-":
                bands.pop(record.id, None)
            else:
                bands[record.id] = record
            previous_band[record.id] = record
            after = _sign_off_in_effect(rule, bands)
            if rule is None:  # a band row older than every rule row: history rows were pruned
                continue
            lines.append(_band_line(record, previous, rule, before=before, after=after))
            continue
        previous_rule, rule = rule, record
        after = _sign_off_in_effect(rule, bands)
        lines.append(_rule_line(record, previous_rule, before=before, after=after))
    lines.reverse()
    return lines


def _band_line(record: Any, previous: Any | None, rule: Any, *, before: bool, after: bool) -> HistoryLine:
    """A band's change, told under the rule version it was made in."""
    return HistoryLine(
        when=record.history_date,
        who=who(record),
        change=CHANGE_KINDS[record.history_type],
        subject=band_label(previous if previous is not None and record.history_type == "~" else record),
        changes=field_changes(record, None if record.history_type == "+" else previous, ["rule"]),
        reason=record.history_change_reason or "",
        version_id=rule.history_id,
        own=False,
        sign_off=_sign_off_context(before=before, after=after, signed_now=False, rule_record=rule),
    )


def _rule_line(record: Any, previous_rule: Any | None, *, before: bool, after: bool) -> HistoryLine:
    """A change of the rule itself; a sign-off made outside a request (seeding, a command) is told as the signer's."""
    signed_now = bool(record.signed_off_at) and (
        previous_rule is None or previous_rule.signed_off_at != record.signed_off_at
    )
    line_who = who(record)
    if signed_now and record.history_user_id is None and record.signed_off_by_id:
        line_who = _signer(record)
    return HistoryLine(
        when=record.history_date,
        who=line_who,
        change=CHANGE_KINDS[record.history_type],
        subject="",
        # Who edited is the line's own "who"; the field only keeps it for the four-eyes check of the sign-off.
        changes=field_changes(record, None if record.history_type == "+" else previous_rule, ["edited_by"]),
        reason=record.history_change_reason or "",
        version_id=record.history_id,
        own=True,
        sign_off=""
        if record.history_type == "-"
        else _sign_off_context(before=before, after=after, signed_now=signed_now, rule_record=record),
    )


def threshold_rule_history(rule_id: int) -> list[HistoryLine]:
    """Every line of a rule's history page, bands included (a rule has a handful of versions: no paging needed)."""
    rule_records = ThresholdRule.history.filter(id=rule_id).select_related("history_user", "signed_off_by")
    band_records = ThresholdBand.history.filter(rule_id=rule_id).select_related(
        "history_user", "approver", "approver_group", "review_group"
    )
    return threshold_rule_lines(list(rule_records), list(band_records))
