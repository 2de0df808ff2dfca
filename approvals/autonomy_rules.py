"""Progressive autonomy's suggestions: the rules R1, R2, T1 and T2 (approvals/autonomy.py's docstring), applied to
an agent's record per band. Read-only: a suggestion is for the business owner to weigh, never applied."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from fractions import Fraction
from typing import Any

from approvals.autonomy_records import (
    HUMAN_MODES,
    MAX_RAISE_FACTOR,
    RAISE_MIN_DECIDED,
    TIGHTEN_MIN_DECIDED,
    TIGHTEN_REJECTION_RATE,
    BandRecord,
    Outcomes,
    Suggestion,
    SuggestionKind,
    money,
    round_down,
)
from approvals.choices import DecisionMode
from governance.models import ThresholdBand, ThresholdRule

_KIND_ORDER = [SuggestionKind.TIGHTEN, SuggestionKind.REVIEW, SuggestionKind.RAISE, SuggestionKind.RELAX]


def suggest(records: list[BandRecord], *, rules: dict[int, ThresholdRule], days: int) -> list[Suggestion]:
    """The rules R1, R2, T1 and T2 of the module docstring, applied to the bands still in force."""
    found = _Found()
    by_band: dict[int, BandRecord] = {r.current.pk: r for r in records if r.current is not None}
    window = f"in the last {days} day{'' if days == 1 else 's'}"
    for rule in rules.values():
        bands = list(rule.bands.all())  # ordered by min_amount
        for index, band in enumerate(bands):
            record = by_band.get(band.pk)
            if record is not None:
                _judge(_Band(rule, bands, index, record, window, by_band), found)
    return sorted(found.values(), key=lambda s: (_KIND_ORDER.index(s.kind), s.rule_name, s.band))


@dataclass(frozen=True)
class _Band:
    """One band still in force, its neighbours in the rule, and its record over the window."""

    rule: ThresholdRule
    bands: list[ThresholdBand]
    index: int
    record: BandRecord
    window: str
    by_band: dict[int, BandRecord]

    @property
    def band(self) -> ThresholdBand:
        return self.bands[self.index]

    @property
    def above(self) -> ThresholdBand | None:
        return self.bands[self.index + 1] if self.index + 1 < len(self.bands) else None

    @property
    def below(self) -> list[ThresholdBand]:
        return self.bands[: self.index]

    @property
    def lower_auto(self) -> ThresholdBand | None:
        """The auto band that ends where this one starts (bands follow each other without gap: validate_bands)."""
        previous = self.bands[self.index - 1] if self.index else None
        return previous if previous is not None and previous.mode == DecisionMode.AUTO else None

    @property
    def human(self) -> bool:
        return self.band.mode in HUMAN_MODES

    @property
    def where(self) -> str:
        return f"in band {self.band} of “{self.rule.name}”"


@dataclass
class _Found:
    """The suggestions so far; the same change suggested twice is one suggestion with both reasons."""

    by_key: dict[tuple[int, str, str], Suggestion] = field(default_factory=dict)

    def add(
        self, kind: str, rule: ThresholdRule, band: ThresholdBand, text: str, evidence: list[str], **limits: Any
    ) -> None:
        key = (rule.pk, kind, text)
        if key in self.by_key:
            merged = self.by_key[key].evidence + tuple(
                item for item in evidence if item not in self.by_key[key].evidence
            )
            self.by_key[key] = replace(self.by_key[key], evidence=merged)
            return
        self.by_key[key] = Suggestion(
            kind=kind,
            rule_id=rule.pk,
            rule_name=rule.name,
            band=str(band),
            text=text,
            evidence=tuple(evidence),
            **limits,
        )

    def values(self) -> list[Suggestion]:
        return list(self.by_key.values())


def _judge(b: _Band, found: _Found) -> None:
    """Tighten first (T1, T2); only a band nobody tightens may be loosened (R1, R2)."""
    tightened = _t1_rejections(b, found)
    tightened = _t2_trouble(b, found) or tightened
    record = b.record
    clean = b.human and not tightened and record.decided_by_people >= RAISE_MIN_DECIDED
    if clean and record.rejected == 0 and record.trouble == 0:
        _r1_raise(b, found)
        _r2_relax(b, found)


def _lower_limit(b: _Band, found: _Found, auto_band: ThresholdBand, evidence: list[str]) -> None:
    limit = auto_band.max_amount
    assert limit is not None
    lower = round_down(limit / 2)
    cur = b.rule.currency
    found.add(
        SuggestionKind.TIGHTEN,
        b.rule,
        auto_band,
        f"Consider lowering the auto-approve limit of “{b.rule.name}” from {money(limit)} {cur} to "
        f"{money(lower)} {cur}: proposals just under the limit go through unchecked.",
        evidence,
        current_limit=limit,
        suggested_limit=lower,
    )


def _review_scope(b: _Band, found: _Found, why: str, evidence: list[str]) -> None:
    found.add(
        SuggestionKind.REVIEW,
        b.rule,
        b.band,
        f"Consider narrowing what the agent may propose, or asking its owner to review its instructions: {why}.",
        evidence,
    )


def _t1_rejections(b: _Band, found: _Found) -> bool:
    """T1: people reject many of these. True when it suggested something."""
    record = b.record
    if not b.human or record.decided_by_people < TIGHTEN_MIN_DECIDED:
        return False
    if Fraction(record.rejected, record.decided_by_people) < TIGHTEN_REJECTION_RATE:
        return False
    evidence = [
        f"people rejected {record.rejected} of {record.decided_by_people} proposals "
        f"({record.rejection_rate_text}) {b.where} {b.window}"
    ]
    lower_auto = b.lower_auto
    if lower_auto is not None and lower_auto.max_amount:
        _lower_limit(b, found, lower_auto, evidence)
    else:
        _review_scope(b, found, f"a person already decides every proposal {b.where}", evidence)
    return True


def _t2_trouble(b: _Band, found: _Found) -> bool:
    """T2: trouble after approval (failed, reversed, flagged). True when it suggested something."""
    if not b.record.trouble:
        return False
    evidence = [f"among the proposals {b.where} {b.window}, {_trouble_text(b.record)}"]
    band, above = b.band, b.above
    if band.mode == DecisionMode.AUTO and band.max_amount and above and above.mode in HUMAN_MODES:
        _lower_limit(b, found, band, evidence)
    elif band.mode == DecisionMode.AUTO:
        text = f"Consider requiring one approver {b.where} instead of auto-approving it."
        found.add(SuggestionKind.TIGHTEN, b.rule, band, text, evidence)
    elif band.mode == DecisionMode.SINGLE:
        text = f"Consider requiring a second reviewer (dual approval) {b.where}."
        found.add(SuggestionKind.TIGHTEN, b.rule, band, text, evidence)
    else:
        _review_scope(b, found, f"{b.where} two people already decide each proposal", evidence)
    return True


def _boring(b: _Band) -> list[str]:
    """The evidence that people keep approving these without trouble."""
    record = b.record
    evidence = [f"no rejection in {record.decided_by_people} proposals decided by people {b.window} ({b.where})"]
    if record.median_time_to_decision is not None:
        evidence.append(f"people took a median of {record.median_text} to decide each")
    if record.sla_breaches:
        evidence.append(f"{record.sla_breaches} of these proposals passed their SLA waiting for a person")
    return evidence


def _r1_raise(b: _Band, found: _Found) -> None:
    """R1: raise the auto-approve limit, a step at a time, as far as the record reaches."""
    below = b.below
    auto_below = bool(below) and all(band.mode == DecisionMode.AUTO for band in below)
    troubled_below = [band for band in below if b.by_band.get(band.pk) is not None and b.by_band[band.pk].trouble]
    lower_auto = b.lower_auto
    if not auto_below or lower_auto is None or troubled_below:
        return
    record, band, cur = b.record, b.band, b.rule.currency
    limit = band.min_amount
    candidates: list[Decimal] = [limit * MAX_RAISE_FACTOR]
    if band.max_amount is not None:
        candidates.append(band.max_amount)
    if record.largest_approved_impact is not None:
        candidates.append(record.largest_approved_impact)
    raised = round_down(min(candidates))
    if raised <= limit:
        return
    found.add(
        SuggestionKind.RAISE,
        b.rule,
        lower_auto,
        f"Consider raising the auto-approve limit of “{b.rule.name}” from {money(limit)} {cur} to "
        f"{money(raised)} {cur}.",
        [
            *_boring(b),
            "no execution failed, was reversed or was flagged in this band or in the auto-approved "
            f"band below it {b.window}",
            f"the largest impact people approved was {money(record.largest_approved_impact)} {cur}"
            if record.largest_approved_impact is not None
            else "no impact was recorded",
            f"{money(raised)} is the smallest of: {MAX_RAISE_FACTOR} × the current limit, the band's "
            "upper bound and the largest impact approved, rounded down to two significant figures",
        ],
        current_limit=limit,
        suggested_limit=raised,
    )


def _r2_relax(b: _Band, found: _Found) -> None:
    """R2: a second reviewer who never disagrees."""
    if b.band.mode != DecisionMode.DUAL:
        return
    found.add(
        SuggestionKind.RELAX,
        b.rule,
        b.band,
        f"Consider whether band {b.band} of “{b.rule.name}” still needs a second reviewer: one approver could "
        "decide it.",
        [*_boring(b), f"no execution failed, was reversed or was flagged {b.where} {b.window}"],
    )


def _trouble_text(record: Outcomes) -> str:
    parts = []
    if record.failed:
        parts.append(f"{record.failed} failed")
    if record.reversed:
        parts.append(f"{record.reversed} {'was' if record.reversed == 1 else 'were'} reversed")
    if record.flagged:
        parts.append(f"{record.flagged} {'was' if record.flagged == 1 else 'were'} flagged by the second reviewer")
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]
