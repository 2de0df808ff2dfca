"""The dashboard's charts over the last WINDOW_DAYS days: proposals by band and outcome, the time people took to
decide, and failed executions and reversals per day. Each chart is one aggregate query.

Rollback drills are left out of every chart (console/dashboard/drills.py) and counted on their own line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from django.db.models import Case, Count, F, Q, QuerySet, Value, When
from django.db.models.functions import TruncDate
from django.utils import timezone

from approvals.choices import AWAITING_DECISION, DecisionMode, ProposalStatus
from approvals.models import Proposal
from audit.choices import Verb
from audit.models import AuditEvent
from console.dashboard.drills import DrillSummary, drill_summary, without_drills
from console.dashboard.wording import admin_url, proposals_url

if TYPE_CHECKING:
    from django.contrib.auth.models import User

WINDOW_DAYS = 30  # the charts and the failures list

# What became of a proposal, for the band chart: (key, label, statuses), in the order the bar shows them.
OUTCOMES: list[tuple[str, str, frozenset[str]]] = [
    ("executed", "Executed", frozenset({ProposalStatus.EXECUTED})),
    ("in_flight", "Approved, not executed yet", frozenset({ProposalStatus.APPROVED, ProposalStatus.EXECUTING})),
    ("manual", "Manual task", frozenset({ProposalStatus.MANUAL_TASK})),
    ("waiting", "Waiting for a person or on hold", frozenset({*AWAITING_DECISION, ProposalStatus.ON_HOLD})),
    ("rejected", "Rejected", frozenset({ProposalStatus.REJECTED})),
    ("failed", "Failed", frozenset({ProposalStatus.FAILED})),
    ("reversed", "Reversed", frozenset({ProposalStatus.REVERSED})),
    ("withdrawn", "Expired or cancelled", frozenset({ProposalStatus.EXPIRED, ProposalStatus.CANCELLED})),
]
BAND_LABELS: dict[str, str] = {
    DecisionMode.AUTO: "Auto-executed",
    DecisionMode.SINGLE: "One approver",
    DecisionMode.DUAL: "Approver and second reviewer",
}
NO_RULE_LABEL = "No rule applied: a person decides"
# Time from proposal to a person's decision (for dual approval, the named approver's), as histogram buckets.
DECISION_BUCKETS: list[tuple[str, timedelta | None]] = [
    ("under 15 min", timedelta(minutes=15)),
    ("15 min – 1 h", timedelta(hours=1)),
    ("1 – 4 h", timedelta(hours=4)),
    ("4 – 24 h", timedelta(hours=24)),
    ("over a day", None),
]

# The failures-and-reversals chart, in SVG user units.
DAY_WIDTH, BAR_WIDTH, CHART_HEIGHT = 12, 9, 80


@dataclass(frozen=True)
class Segment:
    key: str
    label: str
    count: int
    width: float  # percent of the widest bar


@dataclass(frozen=True)
class BandBar:
    label: str
    total: int
    segments: list[Segment]
    url: str

    @property
    def summary(self) -> str:
        return ", ".join(f"{segment.label.lower()} {segment.count}" for segment in self.segments)


@dataclass(frozen=True)
class Bucket:
    label: str
    count: int
    width: float


@dataclass(frozen=True)
class DayBar:
    day: Any  # date
    failures: int
    reversals: int
    slot_x: float  # the day's whole column (its tooltip area)
    x: float
    failure_y: float
    failure_height: float
    reversal_y: float
    reversal_height: float


@dataclass(frozen=True)
class Charts:
    days: int
    scope: str  # "all systems" or "your systems"
    bands: list[BandBar]
    outcomes: list[tuple[str, str]]  # (key, label) for the legend
    proposed: int
    buckets: list[Bucket]
    decided: int
    with_sla: int
    within_sla: int
    per_day: list[DayBar]
    failures: int
    reversals: int
    width: int = WINDOW_DAYS * DAY_WIDTH
    height: int = CHART_HEIGHT
    day_width: int = DAY_WIDTH
    bar_width: int = BAR_WIDTH
    failures_url: str = ""
    reversals_url: str = ""
    drills: DrillSummary | None = None  # rollback drills in the window, not counted in the charts above


# --- Building them ------------------------------------------------------------------------------------------------


def charts_panel(user: User, owner: User | None, now: datetime) -> Charts:
    """The last WINDOW_DAYS days in charts: all systems, or only `owner`'s when one is given."""
    start = now - timedelta(days=WINDOW_DAYS)
    proposals = without_drills(Proposal.objects.filter(created_at__gte=start, created_at__lte=now))
    events = without_drills(AuditEvent.objects.all())
    if owner is not None:
        proposals = proposals.filter(system__owner=owner)
        events = events.filter(system__owner=owner)
    reads_audit = user.has_perm("audit.view_auditevent")  # approvers do not: no link to a page that refuses them
    bands, proposed = _band_bars(proposals)
    buckets, decided, with_sla, within_sla = _decision_buckets(proposals)
    per_day, failures, reversals = _per_day(events, now)
    return Charts(
        days=WINDOW_DAYS,
        scope="your systems" if owner is not None else "all systems",
        bands=bands,
        outcomes=[(key, label) for key, label, _ in OUTCOMES],
        proposed=proposed,
        buckets=buckets,
        decided=decided,
        with_sla=with_sla,
        within_sla=within_sla,
        per_day=per_day,
        failures=failures,
        reversals=reversals,
        failures_url=admin_url("audit_auditevent_changelist", verb__exact=Verb.FAILED) if reads_audit else "",
        reversals_url=admin_url("audit_auditevent_changelist", verb__exact=Verb.REVERSED) if reads_audit else "",
        drills=drill_summary(user, owner, start),
    )


def _band_bars(proposals: QuerySet[Proposal]) -> tuple[list[BandBar], int]:
    """One grouped query: per band (the decision mode, or no rule at all) the count of each outcome."""
    rows = (
        proposals.annotate(no_rule=Case(When(rule__isnull=True, then=Value(True)), default=Value(False)))
        .values("mode", "no_rule")
        .annotate(
            total=Count("pk"),
            **{key: Count("pk", filter=Q(status__in=statuses)) for key, _, statuses in OUTCOMES},
        )
        .order_by()
    )
    # Ordered as the bands of a rule go: auto, one approver, two people; proposals no rule decided last.
    order: list[str] = [DecisionMode.AUTO, DecisionMode.SINGLE, DecisionMode.DUAL, ""]
    groups: dict[str, dict[str, int]] = {}
    for row in rows:
        mode = "" if row["no_rule"] else row["mode"]
        group = groups.setdefault(mode, dict.fromkeys(["total", *(key for key, _, _ in OUTCOMES)], 0))
        for key in group:
            group[key] += row[key]
    widest = max((group["total"] for group in groups.values()), default=0)
    bars = []
    for mode in sorted(groups, key=lambda mode: order.index(mode) if mode in order else len(order)):
        group = groups[mode]
        segments = [
            Segment(key, outcome, group[key], 100 * group[key] / widest) for key, outcome, _ in OUTCOMES if group[key]
        ]
        label = BAND_LABELS.get(mode, mode) if mode else NO_RULE_LABEL
        url = proposals_url(mode__exact=mode) if mode else proposals_url()
        bars.append(BandBar(label, group["total"], segments, url))
    return bars, sum(group["total"] for group in groups.values())


def _decision_buckets(proposals: QuerySet[Proposal]) -> tuple[list[Bucket], int, int, int]:
    """One aggregate: how long people took to decide, bucketed; and how many decided within the SLA."""
    decided = proposals.filter(decided_by__isnull=False, decided_at__isnull=False)
    aggregates: dict[str, Any] = {
        "decided": Count("pk"),
        "with_sla": Count("pk", filter=Q(sla_due_at__isnull=False)),
        "within_sla": Count("pk", filter=Q(sla_due_at__isnull=False, decided_at__lte=F("sla_due_at"))),
    }
    lower: timedelta | None = None
    for index, (_, upper) in enumerate(DECISION_BUCKETS):
        condition = Q()
        if lower is not None:
            condition &= Q(decided_at__gte=F("created_at") + lower)
        if upper is not None:
            condition &= Q(decided_at__lt=F("created_at") + upper)
        aggregates[f"bucket_{index}"] = Count("pk", filter=condition)
        lower = upper
    counts = decided.aggregate(**aggregates)
    widest = max((counts[f"bucket_{index}"] for index in range(len(DECISION_BUCKETS))), default=0) or 1
    buckets = [
        Bucket(label, counts[f"bucket_{index}"], 100 * counts[f"bucket_{index}"] / widest)
        for index, (label, _) in enumerate(DECISION_BUCKETS)
    ]
    return buckets, counts["decided"], counts["with_sla"], counts["within_sla"]


def _per_day(events: QuerySet[AuditEvent], now: datetime) -> tuple[list[DayBar], int, int]:
    """One grouped query over the (verb, occurred_at) index: failed executions and reversals per local day."""
    today = timezone.localdate(now)
    first = today - timedelta(days=WINDOW_DAYS - 1)
    since = timezone.make_aware(datetime.combine(first, time.min))
    rows = (
        events.filter(verb__in=[Verb.FAILED, Verb.REVERSED], occurred_at__gte=since, occurred_at__lte=now)
        .annotate(day=TruncDate("occurred_at", tzinfo=timezone.get_current_timezone()))
        .values("day", "verb")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[tuple[Any, str], int] = {(row["day"], row["verb"]): row["n"] for row in rows}
    days = [first + timedelta(days=offset) for offset in range(WINDOW_DAYS)]
    tallest = max((counts.get((day, Verb.FAILED), 0) + counts.get((day, Verb.REVERSED), 0) for day in days), default=0)
    scale = (CHART_HEIGHT - 2) / tallest if tallest else 0
    bars = []
    for index, day in enumerate(days):
        failed, reversed_ = counts.get((day, Verb.FAILED), 0), counts.get((day, Verb.REVERSED), 0)
        failure_height, reversal_height = failed * scale, reversed_ * scale
        bars.append(
            DayBar(
                day=day,
                failures=failed,
                reversals=reversed_,
                slot_x=index * DAY_WIDTH,
                x=index * DAY_WIDTH + (DAY_WIDTH - BAR_WIDTH) / 2,
                failure_y=CHART_HEIGHT - failure_height,
                failure_height=failure_height,
                reversal_y=CHART_HEIGHT - failure_height - reversal_height,
                reversal_height=reversal_height,
            )
        )
    return bars, sum(bar.failures for bar in bars), sum(bar.reversals for bar in bars)
