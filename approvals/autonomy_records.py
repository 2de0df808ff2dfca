"""Progressive autonomy's report, as data: the outcomes per band, the suggestions, and how they are worded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from approvals.choices import DecisionMode
from governance.models import Agent, ThresholdBand

DEFAULT_DAYS = 30
RAISE_MIN_DECIDED = 100
MAX_RAISE_FACTOR = 2
TIGHTEN_MIN_DECIDED = 10
TIGHTEN_REJECTION_RATE = Fraction(1, 5)

HUMAN_MODES = frozenset({DecisionMode.SINGLE, DecisionMode.DUAL})
FALLBACK_LABEL = "No rule applied: a person decides (fail-closed fallback)"


class SuggestionKind:
    TIGHTEN = "tighten"
    REVIEW = "review"
    RAISE = "raise"
    RELAX = "relax"


# --- What the report holds ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcomes:
    """Counts of what became of a set of proposals, and how long people took to decide them."""

    proposed: int = 0
    auto_approved: int = 0
    decided_by_people: int = 0
    approved: int = 0
    rejected: int = 0
    failed: int = 0
    reversed: int = 0
    flagged: int = 0
    sla_breaches: int = 0
    awaiting: int = 0
    expired: int = 0
    cancelled: int = 0
    median_time_to_decision: timedelta | None = None

    @property
    def approval_rate(self) -> float | None:
        return self.approved / self.decided_by_people if self.decided_by_people else None

    @property
    def rejection_rate(self) -> float | None:
        return self.rejected / self.decided_by_people if self.decided_by_people else None

    @property
    def trouble(self) -> int:
        """Failures, reversals and flags: writes that went wrong after they were approved."""
        return self.failed + self.reversed + self.flagged

    @property
    def approval_rate_text(self) -> str:
        return percent(self.approved, self.decided_by_people)

    @property
    def rejection_rate_text(self) -> str:
        return percent(self.rejected, self.decided_by_people)

    @property
    def median_text(self) -> str:
        return describe_duration(self.median_time_to_decision)

    def as_json(self) -> dict[str, Any]:
        median = self.median_time_to_decision
        return {
            "proposed": self.proposed,
            "auto_approved": self.auto_approved,
            "decided_by_people": self.decided_by_people,
            "approved": self.approved,
            "rejected": self.rejected,
            "approval_rate": self.approval_rate,
            "rejection_rate": self.rejection_rate,
            "failed": self.failed,
            "reversed": self.reversed,
            "flagged": self.flagged,
            "sla_breaches": self.sla_breaches,
            "awaiting": self.awaiting,
            "expired": self.expired,
            "cancelled": self.cancelled,
            "median_time_to_decision_seconds": None if median is None else median.total_seconds(),
        }


@dataclass(frozen=True)
class BandRecord(Outcomes):
    """The agent's proposals decided under one band (as recorded on each proposal) in the window."""

    rule_id: int | None = None
    rule_name: str = ""
    band: str | None = None  # str(ThresholdBand) when decided; None: the fail-closed fallback decided
    mode: str = ""
    currency: str = ""
    largest_approved_impact: Decimal | None = None
    current: ThresholdBand | None = None  # the rule's band with the same terms today; None if edited since

    @property
    def band_text(self) -> str:
        return self.band or FALLBACK_LABEL

    @property
    def still_in_force(self) -> bool:
        return self.current is not None

    def as_json(self) -> dict[str, Any]:
        largest = self.largest_approved_impact
        return {
            "rule_id": self.rule_id,
            "rule": self.rule_name or None,
            "band": self.band,
            "mode": self.mode,
            "currency": self.currency or None,
            "band_in_force": self.still_in_force,
            **super().as_json(),
            "largest_approved_impact": None if largest is None else f"{largest:.2f}",
        }


@dataclass(frozen=True)
class Suggestion:
    """A threshold change the record suggests, with the evidence, for the business owner to weigh. Never applied."""

    kind: str
    rule_id: int
    rule_name: str
    band: str  # the band whose terms would change
    text: str
    evidence: tuple[str, ...]
    current_limit: Decimal | None = None
    suggested_limit: Decimal | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rule_id": self.rule_id,
            "rule": self.rule_name,
            "band": self.band,
            "suggestion": self.text,
            "evidence": list(self.evidence),
            "current_limit": None if self.current_limit is None else f"{self.current_limit:.2f}",
            "suggested_limit": None if self.suggested_limit is None else f"{self.suggested_limit:.2f}",
        }


@dataclass(frozen=True)
class AutonomyReport:
    agent: Agent
    days: int
    start: datetime
    end: datetime
    bands: tuple[BandRecord, ...]
    totals: Outcomes
    suggestions: tuple[Suggestion, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent.slug,
            "days": self.days,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "totals": self.totals.as_json(),
            "bands": [band.as_json() for band in self.bands],
            "suggestions": [suggestion.as_json() for suggestion in self.suggestions],
        }


# --- Wording ------------------------------------------------------------------------------------------------------


def percent(part: int, whole: int) -> str:
    if not whole:
        return "—"
    value = Fraction(part * 100, whole)
    return f"{int(value)}%" if value.denominator == 1 else f"{float(value):.1f}%"


def describe_duration(value: timedelta | None) -> str:
    if value is None:
        return "—"
    seconds = round(value.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{seconds} s"


def money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def round_down(amount: Decimal) -> Decimal:
    """Down to two significant figures (4,873.12 → 4,800): a limit people can read and remember."""
    if amount <= 0:
        return Decimal(0)
    quantum = Decimal(1).scaleb(amount.adjusted() - 1)
    return (amount // quantum) * quantum
