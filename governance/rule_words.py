"""A threshold rule in words for the people who sign it off: its bands, the other terms a sign-off covers, its state.

The rule page, its sign-off page and the rules list say these the same way; a voided sign-off is always called void,
never "signed off by" alone.
"""

from __future__ import annotations

from core.durations import duration_words
from core.history import amount, person, window_words
from governance.choices import BandMode, CumulativeScope, ReviewTiming
from governance.models import ThresholdBand, ThresholdRule, condition_words


def band_range_words(band: ThresholdBand, currency: str) -> str:
    """ "Under 800.00 USD", "800.00 to under 5,000.00 USD", "5,000.00 USD and above", "Any amount"."""
    if band.max_amount is None:
        return "Any amount" if band.min_amount == 0 else f"{amount(band.min_amount)} {currency} and above"
    if band.min_amount == 0:
        return f"Under {amount(band.max_amount)} {currency}"
    return f"{amount(band.min_amount)} to under {amount(band.max_amount)} {currency}"


def _approver_words(band: ThresholdBand) -> str:
    if band.approver_id:
        return person(band.approver)
    group = band.approver_group if band.approver_group_id else None
    return f"someone in the {group.name} group" if group is not None else "an approver"


def band_words(band: ThresholdBand, currency: str) -> str:
    """What happens to a proposal in this band, in one sentence: who decides, within how long, and when it runs."""
    when = f"When {condition_words(band.condition)}: " if band.condition else ""
    where = band_range_words(band, currency)
    if band.mode == BandMode.AUTO:
        return f"{when}{where}: runs at once without a person, and is logged."
    within = f" within {duration_words(band.sla)}" if band.sla else ""
    text = f"{when}{where}: {_approver_words(band)} approves it{within}"
    if band.mode == BandMode.SINGLE:
        return text + " before it runs."
    reviewers = band.review_group if band.review_group_id else None
    group = reviewers.name if reviewers is not None else "(no group)"
    review = f" within {duration_words(band.review_within)}" if band.review_within else ""
    if band.review_timing == ReviewTiming.AFTER_EXECUTION:
        return (
            f"{text}; it runs on that approval, and someone in the {group} group reviews it{review} after it runs "
            "(a flag plans its reversal)."
        )
    return f"{text}, and someone in the {group} group reviews it{review}; it runs only after both."


def signed_terms(rule: ThresholdRule) -> list[str]:
    """The terms beyond the bands' amounts that a sign-off puts in force, one sentence each."""
    window = window_words(rule.cumulative_window)
    if rule.cumulative_scope == CumulativeScope.RECORD:
        counting = f"the agent's standing proposals on the same record in the last {window} count"
    elif rule.cumulative_scope == CumulativeScope.SYSTEM:
        counting = f"the agent's standing proposals on any record of the system in the last {window} count"
    else:
        counting = "each proposal is judged alone"
    action = rule.action_type if rule.pk else None
    if action is not None and action.reversible:
        irreversible = f"{action.name} can be reversed"
    elif rule.auto_executes_irreversible:
        irreversible = "an auto band EXECUTES writes that cannot be reversed without a person"
    else:
        irreversible = "a write that cannot be reversed always waits for a person, whatever its band"
    conditions = [str(band) for band in rule.bands.all() if band.condition] if rule.pk else []
    owner = "may not" if rule.owner_may_not_approve else "may"
    return [
        f"Amounts: {counting}.",
        f"Irreversible writes: {irreversible}.",
        "Payload conditions: " + ("; ".join(conditions) if conditions else "none") + ".",
        f"Waiting: a proposal nobody decided expires after {duration_words(rule.max_age) if rule.max_age else '?'}; "
        f"the agent's owner {owner} approve the agent's proposals.",
    ]


def sign_off_words(rule: ThresholdRule, *, short: bool = False) -> str:
    """In force and by whom, void since an edit, or never signed off. `short`: for a list's column."""
    signer = person(rule.signed_off_by) if rule.signed_off_by_id else ""
    when = f"{rule.signed_off_at:%Y-%m-%d %H:%M} UTC" if rule.signed_off_at else ""
    if rule.is_signed_off:
        if short:
            return f"In force: signed off by {signer}"
        return f"In force: signed off by {signer} on {when}."
    if signer:
        if short:
            return f"VOID: edited after {signer}'s sign-off"
        return (
            f"VOID: edited after {signer} signed it off on {when}. Until it is signed off again, every proposal under "
            "it waits for a person."
        )
    if short:
        return "Not signed off"
    return "Not signed off: every proposal under it waits for a person."
