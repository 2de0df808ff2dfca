"""A proposal in words a person reads at a glance: one sentence for what it does, values as amounts.

"Raise the credit limit of account 4471 from 2,000.00 to 5,000.00" is what the approval queue, the admin home's
panels and the decision page say; the phrase is the record timeline's own (audit.timeline.change_phrase), so a
proposal reads the same in the queue and in the record's story afterwards.
"""

from __future__ import annotations

from typing import Any

from approvals.models import Proposal
from audit.timeline import change_phrase
from core.numbers import finite_decimal
from governance.choices import ImpactKind
from governance.models import ActionType

VALUE_CHARS = 60  # a payload's text (a note, say) is cut here: the sentence is a list's line, the page shows it whole
EMPTY = "—"


def amount_text(value: Any) -> str:
    """An amount as people read one: "2,000.00"; a value that is not a number as it is; "—" for none."""
    if value is None:
        return EMPTY
    number = finite_decimal(value)
    return f"{number:,.2f}" if number is not None else str(value)


def is_amount(action: ActionType, field: str) -> bool:
    """Whether `field` of the action's record holds money (the field its impact is computed from)."""
    return action.impact_kind != ImpactKind.NONE and field == action.impact_field


def field_text(action: ActionType, field: str, value: Any) -> str:
    """One field's value as the decision page and the sentence show it: amounts as amounts, "—" for none."""
    if value is None or value == "":
        return EMPTY
    return amount_text(value) if is_amount(action, field) else str(value)


def field_label(field: str) -> str:
    return field.replace("_", " ")


def _short(text: str) -> str:
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1].rstrip() + "…"


def values_before(proposal: Proposal) -> dict[str, Any]:
    """What the write replaces: what the system said it replaced once written, else what the decision rests on (the
    record's fields as the proposal keeps them, read when it was proposed or last decided again)."""
    if proposal.executed_at and isinstance(proposal.state_before, dict) and proposal.state_before:
        return proposal.state_before
    return proposal.record_snapshot or {}


def proposal_sentence(proposal: Proposal) -> str:
    """What `proposal` does, in one sentence that starts with a verb and names the record.

    An action that sets fields of a record says each change ("Raise the credit limit of account 4471 from 2,000.00 to
    5,000.00"); any other says its name and payload ("Add note on account 4471 (text: Customer called…)"). Needs the
    proposal's action_type and its resource loaded (select_related) to stay one query for a list.
    """
    action = proposal.action_type
    thing = f"{action.resource.label} {proposal.record_id}"
    payload = proposal.payload if isinstance(proposal.payload, dict) else {}
    sets_fields = set((action.operation or {}).get("fields") or [])
    if payload and set(payload) <= sets_fields:
        after = {name: _plain(action, name, value) for name, value in payload.items()}
        before = {name: _plain(action, name, value) for name, value in values_before(proposal).items()}
        phrase = change_phrase(before, after, thing=thing, currency="", past=False)
        return _short_phrase(phrase[:1].upper() + phrase[1:])
    name = field_label(action.name)
    sentence = f"{name[:1].upper()}{name[1:]} on {thing}"
    details = ", ".join(
        f"{field_label(key)}: {_short(field_text(action, key, value))}" for key, value in payload.items()
    )
    return f"{sentence} ({details})" if details else sentence


def _plain(action: ActionType, field: str, value: Any) -> Any:
    # An amount with its two decimals ("5000" → "5000.00"): the phrase then shows it as one ("5,000.00") and still
    # compares it as a number (raise or lower).
    number = finite_decimal(value) if is_amount(action, field) else None
    return f"{number:.2f}" if number is not None else value


def _short_phrase(phrase: str) -> str:
    # Several fields, or long values: the list keeps one readable line's worth; the page says all of it.
    return phrase if len(phrase) <= 3 * VALUE_CHARS else phrase[: 3 * VALUE_CHARS - 1].rstrip() + "…"
