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

Suggestion rules (the rules in approvals/autonomy_rules.py, their constants in approvals/autonomy_records.py).
Only bands that still exist unchanged in their rule take part.

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
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Aggregate, Count, DurationField, Exists, ExpressionWrapper, F, Max, OuterRef, Q, QuerySet
from django.db.models.fields.json import KT
from django.db.models.functions import Abs
from django.utils import timezone

from approvals.autonomy_records import DEFAULT_DAYS, AutonomyReport, BandRecord, Outcomes
from approvals.autonomy_rules import suggest
from approvals.choices import AWAITING_DECISION, DecisionMode, ProposalStatus, ReviewOutcome
from approvals.models import Proposal
from audit.choices import Verb
from audit.models import AuditEvent
from governance.models import Agent, ThresholdRule

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


def _band_record(row: dict[str, Any], rules: dict[int, ThresholdRule], medians: dict[tuple, timedelta]) -> BandRecord:
    """One row of the grouped counts as a band's record, matched to the rule's band of the same terms today."""
    rule = rules.get(row["rule_id"])
    band = _band(row["band"])
    current = next((b for b in rule.bands.all() if str(b) == band), None) if rule and band else None
    counts = {name: row[name] for name in Outcomes.__dataclass_fields__ if name != "median_time_to_decision"}
    return BandRecord(
        rule_id=row["rule_id"],
        rule_name=rule.name if rule else "",
        band=band,
        mode=row["mode"],
        currency=rule.currency if rule else (row["currency"] or ""),
        current=current,
        **counts,
        median_time_to_decision=medians.get((row["rule_id"], row["mode"], band)),
        largest_approved_impact=row["largest_approved_impact"],
    )


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

    records = [_band_record(row, rules, medians) for row in rows]
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
