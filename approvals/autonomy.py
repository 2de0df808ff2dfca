"""Progressive autonomy: an agent's record per threshold band over a window, and the threshold changes it suggests.

Read-only: nothing here changes a rule. A suggestion is for the system's business owner to weigh; acting on it means
editing the rule and signing it off again (governance.services.threshold_rule_sign_off), like any other change.

Band identity. A proposal does not point at a ThresholdBand row: policy.decide() records the band's terms as text in
`Proposal.decision["band"]` (str(ThresholdBand), e.g. "500.00–5000.00: One approver within the SLA") and the rule in
`Proposal.rule`. The report groups by (rule, recorded band, mode). A recorded band matches today's band of the rule
when the terms are the same text; a band edited since no longer matches, and its record is shown but suggests nothing,
since the evidence concerns terms that no longer apply. Proposals decided by the fail-closed fallback (no rule, rule
not signed off, impact unknown, propose-only system) record no rule and no band: one row, never a suggestion.

Outcomes, per proposal made in the window (created_at in [now - days, now]), as they stand at `now`:

- auto-approved: decided by a band in auto mode (no person involved);
- decided by people: a person approved or rejected it (decided_by set), and it is no longer awaiting a decision,
  expired or cancelled. Rejected: status `rejected` (by the approver, or flagged by the second reviewer before
  execution). Approved: decided by people and not rejected. The approval and rejection rates divide by this count;
- failed: status `failed` (execution failed, or a manual task could not be done);
- reversed: status `reversed`, or a `reversed` audit event names it;
- flagged: the second reviewer flagged it (review_outcome `flagged`);
- SLA breach: an `escalated` audit event names it, or its status is `escalated`, or it was decided after its
  sla_due_at, or it is still undecided (awaiting a decision, or expired) with its sla_due_at past;
- median time to decision: decided_at - created_at over the proposals decided by people (for dual approval, the
  named approver's decision).

Suggestion rules (constants below). Only bands that still exist unchanged in their rule take part.

R1 raise — a band in single or dual mode, with only auto bands below it in its rule (at least one), and in the window:
   at least RAISE_MIN_DECIDED proposals decided by people, none rejected, and no failure, reversal or flag in this
   band nor in the auto bands below it. Suggested: raise the auto-approve limit A (this band's lower bound) to B, the
   smallest of A × MAX_RAISE_FACTOR, this band's upper bound and the largest impact people approved in it, rounded
   down to two significant figures; only if B > A. Autonomy grows a step at a time, and only as far as the record
   reaches. A rule without an auto band gets no raise: starting autonomy is the owner's call, not a step.
R2 relax — a band in dual mode, with at least RAISE_MIN_DECIDED proposals decided by people, none rejected, and no
   failure, reversal or flag: consider whether one approver would do instead of two.
T1 rejections — a band in single or dual mode, with at least TIGHTEN_MIN_DECIDED proposals decided by people and a
   rejection rate of TIGHTEN_REJECTION_RATE or more. If an auto band ends where this band starts, at A: lower the
   auto-approve limit from A to A / 2 (two significant figures), since similar proposals just under the limit go
   through unchecked. Otherwise (a person already sees each one): review the agent's scope and instructions.
T2 trouble after approval — any band with at least one failure, reversal or flag in the window:
   - auto band whose upper bound U is followed by a band needing a person: lower the auto-approve limit from U to
     U / 2 (two significant figures);
   - auto band otherwise (open-ended, or followed by another auto band): require one approver in it;
   - single band: require a second reviewer (dual) in it;
   - dual band: review the agent's scope and instructions (there is no stricter mode).
   R1 and R2 never fire for a band where T1 or T2 does, so the report never suggests loosening and tightening the
   same limit. Suggestions proposing the same change (T1 and T2 both lowering one limit) are merged, evidence joined.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from django.db import connection
from django.db.models import Aggregate, Count, DurationField, Exists, ExpressionWrapper, F, Max, OuterRef, Q, QuerySet
from django.db.models.fields.json import KT
from django.db.models.functions import Abs
from django.utils import timezone

from approvals.choices import AWAITING_DECISION, DecisionMode, ProposalStatus, ReviewOutcome
from approvals.models import Proposal
from audit.choices import Verb
from audit.models import AuditEvent
from governance.models import Agent, ThresholdBand, ThresholdRule

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


_KIND_ORDER = [SuggestionKind.TIGHTEN, SuggestionKind.REVIEW, SuggestionKind.RAISE, SuggestionKind.RELAX]


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


# --- The queries --------------------------------------------------------------------------------------------------


class _Median(Aggregate):
    """PostgreSQL's exact median (interpolating between the middle two, as statistics.median does)."""

    function = "PERCENTILE_CONT"
    name = "Median"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = DurationField()


_KEYS = ("rule_id", "mode", "band")
_DECIDED_BY_PEOPLE = Q(decided_by__isnull=False) & ~Q(
    status__in=[*AWAITING_DECISION, ProposalStatus.EXPIRED, ProposalStatus.CANCELLED]
)
_APPROVED_BY_PEOPLE = _DECIDED_BY_PEOPLE & ~Q(status=ProposalStatus.REJECTED)
_TIME_TO_DECISION = ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())


def _band(value: str | None) -> str | None:
    """The recorded band's text; None for the fallback (SQLite's ->> gives a JSON null as the text "null")."""
    return None if value in (None, "null") else value


def _audited(verb: str) -> Exists:
    return Exists(AuditEvent.objects.filter(proposal_id=OuterRef("pk"), verb=verb))


def _counts(window: QuerySet[Proposal], now: datetime) -> list[dict[str, Any]]:
    """One row per (rule, mode, recorded band): every count by conditional aggregation, in one query."""
    sla_breach = (
        Q(_audited(Verb.ESCALATED))
        | Q(status=ProposalStatus.ESCALATED)
        | Q(sla_due_at__isnull=False, decided_at__gt=F("sla_due_at"))
        | Q(
            sla_due_at__lt=now,
            decided_at__isnull=True,
            status__in=[*AWAITING_DECISION, ProposalStatus.EXPIRED],
        )
    )
    return list(
        window.values(*_KEYS)
        .annotate(
            proposed=Count("pk"),
            auto_approved=Count("pk", filter=Q(mode=DecisionMode.AUTO)),
            decided_by_people=Count("pk", filter=_DECIDED_BY_PEOPLE),
            approved=Count("pk", filter=_APPROVED_BY_PEOPLE),
            rejected=Count("pk", filter=_DECIDED_BY_PEOPLE & Q(status=ProposalStatus.REJECTED)),
            failed=Count("pk", filter=Q(status=ProposalStatus.FAILED)),
            reversed=Count("pk", filter=Q(status=ProposalStatus.REVERSED) | Q(_audited(Verb.REVERSED))),
            flagged=Count("pk", filter=Q(review_outcome=ReviewOutcome.FLAGGED)),
            sla_breaches=Count("pk", filter=sla_breach),
            awaiting=Count("pk", filter=Q(status__in=AWAITING_DECISION)),
            expired=Count("pk", filter=Q(status=ProposalStatus.EXPIRED)),
            cancelled=Count("pk", filter=Q(status=ProposalStatus.CANCELLED)),
            currency=Max("impact_currency"),
            largest_approved_impact=Max(Abs("impact_amount"), filter=_APPROVED_BY_PEOPLE),
        )
        .order_by()
    )


def _medians(window: QuerySet[Proposal]) -> tuple[dict[tuple, timedelta], timedelta | None]:
    """The median time to decision per band and overall, over the proposals decided by people.

    PostgreSQL computes it (percentile_cont); elsewhere the decided durations of the window are fetched (two
    timestamps a row, decided proposals only) and the median taken in Python, with the same interpolation.
    """
    decided = window.filter(_DECIDED_BY_PEOPLE)
    if connection.vendor == "postgresql":
        rows = decided.values(*_KEYS).annotate(median=_Median(_TIME_TO_DECISION)).order_by()
        per_band = {(row["rule_id"], row["mode"], _band(row["band"])): row["median"] for row in rows}
        overall = decided.aggregate(median=_Median(_TIME_TO_DECISION))["median"]
        return per_band, overall
    durations: dict[tuple, list[timedelta]] = defaultdict(list)
    for rule_id, mode, band, created_at, decided_at in decided.values_list(
        *_KEYS, "created_at", "decided_at"
    ).order_by():
        durations[(rule_id, mode, _band(band))].append(decided_at - created_at)
    per_band = {key: _median(values) for key, values in durations.items()}
    everything = [value for values in durations.values() for value in values]
    return per_band, (_median(everything) if everything else None)


def _median(values: list[timedelta]) -> timedelta:
    """The middle value, or the mean of the middle two (as percentile_cont(0.5) interpolates)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _band_floor(record: BandRecord) -> Decimal:
    """Where a row sorts inside its rule: today's lower bound, else the one in the recorded text."""
    if record.current is not None:
        return record.current.min_amount
    try:
        return Decimal((record.band or "").split("–", 1)[0])
    except ArithmeticError:
        return Decimal("Infinity")


def autonomy_report(agent: Agent, *, days: int = DEFAULT_DAYS, now: datetime | None = None) -> AutonomyReport:
    """The agent's record over the last `days` days per band, and the threshold changes it suggests (never applies).

    A fixed handful of queries whatever the volume: the counts (one grouped query), the medians (one or two), the
    rules with their bands (two).
    """
    if days < 1:
        raise ValueError("The window must be at least one day.")
    end = now or timezone.now()
    start = end - timedelta(days=days)
    window = Proposal.objects.filter(agent=agent, created_at__gte=start, created_at__lte=end).annotate(
        band=KT("decision__band")
    )
    rows = _counts(window, end)
    medians, overall_median = _medians(window)
    rule_ids = {row["rule_id"] for row in rows if row["rule_id"] is not None}
    rules = {rule.pk: rule for rule in ThresholdRule.objects.filter(pk__in=rule_ids).prefetch_related("bands")}

    records = []
    for row in rows:
        rule = rules.get(row["rule_id"])
        band = _band(row["band"])
        current = next((b for b in rule.bands.all() if str(b) == band), None) if rule and band else None
        records.append(
            BandRecord(
                rule_id=row["rule_id"],
                rule_name=rule.name if rule else "",
                band=band,
                mode=row["mode"],
                currency=rule.currency if rule else (row["currency"] or ""),
                current=current,
                proposed=row["proposed"],
                auto_approved=row["auto_approved"],
                decided_by_people=row["decided_by_people"],
                approved=row["approved"],
                rejected=row["rejected"],
                failed=row["failed"],
                reversed=row["reversed"],
                flagged=row["flagged"],
                sla_breaches=row["sla_breaches"],
                awaiting=row["awaiting"],
                expired=row["expired"],
                cancelled=row["cancelled"],
                median_time_to_decision=medians.get((row["rule_id"], row["mode"], band)),
                largest_approved_impact=row["largest_approved_impact"],
            )
        )
    records.sort(key=lambda r: (r.rule_id is None, r.rule_name, _band_floor(r), r.band or "", r.mode))
    totals = Outcomes(
        **{
            name: sum(getattr(record, name) for record in records)
            for name in Outcomes.__dataclass_fields__
            if name != "median_time_to_decision"
        },
        median_time_to_decision=overall_median,
    )
    return AutonomyReport(
        agent=agent,
        days=days,
        start=start,
        end=end,
        bands=tuple(records),
        totals=totals,
        suggestions=tuple(suggest(records, rules=rules, days=days)),
    )


# --- The suggestions ----------------------------------------------------------------------------------------------


def _trouble_text(record: Outcomes) -> str:
    parts = []
    if record.failed:
        parts.append(f"{record.failed} failed")
    if record.reversed:
        parts.append(f"{record.reversed} {'was' if record.reversed == 1 else 'were'} reversed")
    if record.flagged:
        parts.append(f"{record.flagged} {'was' if record.flagged == 1 else 'were'} flagged by the second reviewer")
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]


def suggest(records: list[BandRecord], *, rules: dict[int, ThresholdRule], days: int) -> list[Suggestion]:
    """The rules R1, R2, T1 and T2 of the module docstring, applied to the bands still in force."""
    window = f"in the last {days} day{'' if days == 1 else 's'}"
    by_band: dict[int, BandRecord] = {r.current.pk: r for r in records if r.current is not None}
    found: dict[tuple[int, str, str], Suggestion] = {}

    def add(kind: str, rule: ThresholdRule, band: ThresholdBand, text: str, evidence: list[str], **limits) -> None:
        key = (rule.pk, kind, text)
        if key in found:  # the same change suggested twice: one suggestion, both reasons
            merged = found[key].evidence + tuple(item for item in evidence if item not in found[key].evidence)
            found[key] = replace(found[key], evidence=merged)
            return
        found[key] = Suggestion(
            kind=kind,
            rule_id=rule.pk,
            rule_name=rule.name,
            band=str(band),
            text=text,
            evidence=tuple(evidence),
            **limits,
        )

    for rule in rules.values():
        bands = list(rule.bands.all())  # ordered by min_amount
        cur = rule.currency
        for index, band in enumerate(bands):
            record = by_band.get(band.pk)
            above = bands[index + 1] if index + 1 < len(bands) else None
            below = bands[:index]
            auto_below = bool(below) and all(b.mode == DecisionMode.AUTO for b in below)
            # The auto band that ends where this one starts (bands follow each other without gap: validate_bands).
            lower_auto = bands[index - 1] if index and bands[index - 1].mode == DecisionMode.AUTO else None
            if record is None:
                continue
            human = band.mode in HUMAN_MODES
            where = f"in band {band} of “{rule.name}”"
            tightened = False

            # T1: people reject many of these.
            if (
                human
                and record.decided_by_people >= TIGHTEN_MIN_DECIDED
                and Fraction(record.rejected, record.decided_by_people) >= TIGHTEN_REJECTION_RATE
            ):
                tightened = True
                evidence = [
                    f"people rejected {record.rejected} of {record.decided_by_people} proposals "
                    f"({record.rejection_rate_text}) {where} {window}"
                ]
                if lower_auto is not None and lower_auto.max_amount:
                    limit, lower = lower_auto.max_amount, round_down(lower_auto.max_amount / 2)
                    add(
                        SuggestionKind.TIGHTEN,
                        rule,
                        lower_auto,
                        f"Consider lowering the auto-approve limit of “{rule.name}” from {money(limit)} {cur} to "
                        f"{money(lower)} {cur}: proposals just under the limit go through unchecked.",
                        evidence,
                        current_limit=limit,
                        suggested_limit=lower,
                    )
                else:
                    add(
                        SuggestionKind.REVIEW,
                        rule,
                        band,
                        "Consider narrowing what the agent may propose, or asking its owner to review its "
                        f"instructions: a person already decides every proposal {where}.",
                        evidence,
                    )

            # T2: trouble after approval.
            if record.trouble:
                tightened = True
                evidence = [f"among the proposals {where} {window}, {_trouble_text(record)}"]
                if band.mode == DecisionMode.AUTO and band.max_amount and above and above.mode in HUMAN_MODES:
                    limit, lower = band.max_amount, round_down(band.max_amount / 2)
                    add(
                        SuggestionKind.TIGHTEN,
                        rule,
                        band,
                        f"Consider lowering the auto-approve limit of “{rule.name}” from {money(limit)} {cur} to "
                        f"{money(lower)} {cur}: proposals just under the limit go through unchecked.",
                        evidence,
                        current_limit=limit,
                        suggested_limit=lower,
                    )
                elif band.mode == DecisionMode.AUTO:
                    add(
                        SuggestionKind.TIGHTEN,
                        rule,
                        band,
                        f"Consider requiring one approver {where} instead of auto-approving it.",
                        evidence,
                    )
                elif band.mode == DecisionMode.SINGLE:
                    add(
                        SuggestionKind.TIGHTEN,
                        rule,
                        band,
                        f"Consider requiring a second reviewer (dual approval) {where}.",
                        evidence,
                    )
                else:
                    add(
                        SuggestionKind.REVIEW,
                        rule,
                        band,
                        f"Consider narrowing what the agent may propose, or asking its owner to review its "
                        f"instructions: {where} two people already decide each proposal.",
                        evidence,
                    )

            clean = (
                human
                and not tightened
                and record.decided_by_people >= RAISE_MIN_DECIDED
                and record.rejected == 0
                and record.trouble == 0
            )
            if not clean:
                continue
            boring = [f"no rejection in {record.decided_by_people} proposals decided by people {window} ({where})"]
            if record.median_time_to_decision is not None:
                boring.append(f"people took a median of {record.median_text} to decide each")
            if record.sla_breaches:
                boring.append(f"{record.sla_breaches} of these proposals passed their SLA waiting for a person")

            # R1: raise the auto-approve limit, a step at a time, as far as the record reaches.
            troubled_below = [b for b in below if by_band.get(b.pk) is not None and by_band[b.pk].trouble]
            if auto_below and lower_auto is not None and not troubled_below:
                limit = band.min_amount
                candidates = [limit * MAX_RAISE_FACTOR]
                if band.max_amount is not None:
                    candidates.append(band.max_amount)
                if record.largest_approved_impact is not None:
                    candidates.append(record.largest_approved_impact)
                raised = round_down(min(candidates))
                if raised > limit:
                    add(
                        SuggestionKind.RAISE,
                        rule,
                        lower_auto,
                        f"Consider raising the auto-approve limit of “{rule.name}” from {money(limit)} {cur} to "
                        f"{money(raised)} {cur}.",
                        [
                            *boring,
                            "no execution failed, was reversed or was flagged in this band or in the auto-approved "
                            f"band below it {window}",
                            f"the largest impact people approved was {money(record.largest_approved_impact)} {cur}"
                            if record.largest_approved_impact is not None
                            else "no impact was recorded",
                            f"{money(raised)} is the smallest of: {MAX_RAISE_FACTOR} × the current limit, the band's "
                            "upper bound and the largest impact approved, rounded down to two significant figures",
                        ],
                        current_limit=limit,
                        suggested_limit=raised,
                    )

            # R2: a second reviewer who never disagrees.
            if band.mode == DecisionMode.DUAL:
                add(
                    SuggestionKind.RELAX,
                    rule,
                    band,
                    f"Consider whether band {band} of “{rule.name}” still needs a second reviewer: one approver could "
                    "decide it.",
                    [*boring, f"no execution failed, was reversed or was flagged {where} {window}"],
                )

    return sorted(found.values(), key=lambda s: (_KIND_ORDER.index(s.kind), s.rule_name, s.band))
