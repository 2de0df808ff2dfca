"""The admin home page per role: each person's work first, then the state of things and the last 30 days in charts.

Sections and who sees them (a superuser sees all of them):

| section      | roles                           | what                                                                |
|--------------|---------------------------------|---------------------------------------------------------------------|
| queue        | approvers (or a named approver) | what this person may decide now, oldest SLA first, with clocks      |
| reviews      | reviewers                       | dual approvals waiting for this person's second review              |
| rules        | business owners                 | their threshold rules that are not (or no longer) signed off        |
| switches     | operators                       | the global stop, frozen systems, disabled agents, held proposals    |
| escalations  | approvers, operators            | proposals past their SLA, undecided                                 |
| failures     | operators, business owners      | executions that failed in the last 30 days, with the reason         |
| availability | operators                       | systems whose circuit breaker is open or whose calls wait           |
| readiness    | operators, business owners      | each agent's checklist: passes, or its first failing item           |
| credentials  | operators, business owners      | credentials overdue for rotation or due within 14 days              |
| audit        | auditors                        | recent denials and overrides, 30-day counts, the last chain check   |
| charts       | all roles but reviewers         | proposals by band and outcome, time to decision, failures/reversals |

Business owners who are not also operators, auditors or superusers see their own systems (and agents) only.

Read-only and bounded: every list is a LIMIT with a count and a link to the filtered changelist, every chart one
aggregate query; the readiness checklists run for at most READINESS_AGENTS agents. Nothing is cached: a decision made
a second ago is gone from the queue on the next page load.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Case, Count, DateTimeField, ExpressionWrapper, F, Q, QuerySet, Value, When
from django.db.models.functions import TruncDate
from django.urls import reverse
from django.utils import timezone

from approvals.choices import AWAITING_DECISION, DecisionMode, ProposalStatus
from approvals.models import Proposal
from approvals.readiness import CheckItem, readiness
from audit.choices import Verb
from audit.links import audit_trail_url
from audit.models import AuditEvent, AuditVerification
from connectors.limits import availability
from connectors.models import Credential
from governance.choices import AgentStatus, Role
from governance.models import Agent, GlobalSwitch, System, ThresholdRule

LIST_LIMIT = 10  # rows per list; the rest is one "see all" link away
WINDOW_DAYS = 30  # the charts and the failures list
ROTATION_HORIZON = timedelta(days=14)  # credentials due within this are listed
READINESS_AGENTS = 10  # each checklist is a dozen queries: the home page runs at most this many
RULES_SCANNED = 200  # whether a rule is signed off is a digest over its bands, computed in Python
SYSTEMS_PROBED = 50  # availability reads the rate store (Redis or a local file) once per system

SECTION_ROLES: dict[str, frozenset[str]] = {
    "queue": frozenset({Role.APPROVERS}),
    "reviews": frozenset({Role.REVIEWERS}),
    "rules": frozenset({Role.BUSINESS_OWNERS}),
    "switches": frozenset({Role.OPERATORS}),
    "escalations": frozenset({Role.APPROVERS, Role.OPERATORS}),
    "failures": frozenset({Role.OPERATORS, Role.BUSINESS_OWNERS}),
    "availability": frozenset({Role.OPERATORS}),
    "readiness": frozenset({Role.OPERATORS, Role.BUSINESS_OWNERS}),
    "credentials": frozenset({Role.OPERATORS, Role.BUSINESS_OWNERS}),
    "audit": frozenset({Role.AUDITORS}),
    "charts": frozenset({Role.APPROVERS, Role.BUSINESS_OWNERS, Role.AUDITORS, Role.OPERATORS}),
}

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
AUDIT_ATTENTION = [Verb.DENIED, Verb.READINESS_OVERRIDDEN]  # listed for auditors, newest first
AUDIT_COUNTED = [Verb.DENIED, Verb.REJECTED, Verb.FLAGGED, Verb.READINESS_OVERRIDDEN, Verb.KILL_SWITCH_ON]

# The failures-and-reversals chart, in SVG user units.
DAY_WIDTH, BAR_WIDTH, CHART_HEIGHT = 12, 9, 80


# --- Wording ------------------------------------------------------------------------------------------------------


def span(seconds: float) -> str:
    """A length of time as people say it on a clock: "2 h 10 min", "15 min", "3 d 4 h", "less than a minute"."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "less than a minute"
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def sla_clock(due: datetime | None, now: datetime) -> tuple[str, bool]:
    """("due in 2 h 10 min", False) or ("overdue by 15 min", True); ("no SLA", False) without a due time."""
    if due is None:
        return "no SLA", False
    seconds = (due - now).total_seconds()
    if seconds >= 0:
        return f"due in {span(seconds)}", False
    return f"overdue by {span(-seconds)}", True


def _admin(name: str, *args: Any, **query: Any) -> str:
    url = reverse(f"admin:{name}", args=args)
    return f"{url}?{urlencode(query)}" if query else url


def _proposals(**query: Any) -> str:
    """The proposal changelist, filtered; `queue` defaults to "all" (the list's own default is the user's queue)."""
    return _admin("approvals_proposal_changelist", **{"queue": "all", **query})


# --- What the page holds ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProposalRow:
    proposal: Proposal
    clock: str  # "due in 2 h 10 min", "overdue by 15 min", or when it failed
    overdue: bool
    url: str


@dataclass(frozen=True)
class Listing:
    """The first LIST_LIMIT rows of something, how many there are in all, and where to see them all."""

    rows: list[Any]
    total: int
    see_all: str

    @property
    def more(self) -> int:
        return max(0, self.total - len(self.rows))


@dataclass(frozen=True)
class Switched:
    label: str
    reason: str
    url: str  # the kill switch page for it ("" when this person may not pull it)


@dataclass(frozen=True)
class SwitchState:
    global_on: bool
    global_reason: str
    global_url: str
    frozen_systems: Listing
    disabled_agents: Listing
    held: int
    held_url: str

    @property
    def all_clear(self) -> bool:
        return not (self.global_on or self.frozen_systems.total or self.disabled_agents.total)


@dataclass(frozen=True)
class AgentReadiness:
    agent: Agent
    ok: bool
    failing: int
    first_failing: CheckItem | None
    url: str


@dataclass(frozen=True)
class ReadinessPanel:
    agents: list[AgentReadiness]
    total: int
    see_all: str

    @property
    def ready(self) -> int:
        return sum(1 for agent in self.agents if agent.ok)

    @property
    def more(self) -> int:
        return max(0, self.total - len(self.agents))


@dataclass(frozen=True)
class CredentialRow:
    credential: Credential
    due_at: datetime
    clock: str
    overdue: bool
    url: str  # its rotate page, or its page for those who may not rotate it
    may_rotate: bool


@dataclass(frozen=True)
class RuleRow:
    rule: ThresholdRule
    state: str
    url: str


@dataclass(frozen=True)
class SystemAvailability:
    system: System
    state: str
    text: str
    url: str


@dataclass(frozen=True)
class AvailabilityPanel:
    trouble: list[SystemAvailability]
    probed: int


@dataclass(frozen=True)
class VerbCount:
    verb: str
    label: str
    count: int
    url: str


@dataclass(frozen=True)
class AuditPanel:
    recent: list[AuditEvent]
    counts: list[VerbCount]
    last_check: AuditVerification | None
    links: list[tuple[str, str]]  # (label, url)


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


@dataclass
class Dashboard:
    """What one person's home page shows; a section is None when it is not for their roles."""

    user: Any
    now: datetime
    roles: frozenset[str]
    everything: bool
    queue: Listing | None = None
    reviews: Listing | None = None
    rules: Listing | None = None
    switches: SwitchState | None = None
    escalations: Listing | None = None
    failures: Listing | None = None
    availability: AvailabilityPanel | None = None
    readiness: ReadinessPanel | None = None
    credentials: Listing | None = None
    audit: AuditPanel | None = None
    charts: Charts | None = None

    @property
    def role_names(self) -> list[str]:
        return sorted(self.roles)

    @property
    def sections(self) -> list[str]:
        return [name for name in SECTION_ROLES if getattr(self, name) is not None]


# --- Building it --------------------------------------------------------------------------------------------------


def dashboard_for(user, now: datetime | None = None) -> Dashboard:
    """The home page of `user`: the sections their roles care about, each bounded (see the module docstring)."""
    now = now or timezone.now()
    roles = frozenset(user.groups.values_list("name", flat=True)) if user.is_authenticated else frozenset()
    everything = bool(user.is_active and user.is_superuser)
    board = Dashboard(user=user, now=now, roles=roles, everything=everything)
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return board

    def wants(section: str) -> bool:
        return everything or bool(roles & SECTION_ROLES[section])

    # A business owner who is nothing more sees their own systems and agents; everyone else reads everything.
    own_only = not everything and Role.BUSINESS_OWNERS in roles and not roles & {Role.OPERATORS, Role.AUDITORS}
    start = now - timedelta(days=WINDOW_DAYS)

    queue = _queue(user, now)
    if wants("queue") or queue.total:  # a person named as approver has a queue whatever their groups
        board.queue = queue
    if wants("reviews"):
        board.reviews = _reviews(user, now)
    if wants("rules"):
        board.rules = _rules(user, everything)
    if wants("switches"):
        board.switches = _switches()
    if wants("escalations"):
        board.escalations = _escalations(now)
    if wants("failures"):
        board.failures = _failures(user if own_only else None, start)
    if wants("availability"):
        board.availability = _availability()
    if wants("readiness"):
        board.readiness = _readiness(user if own_only else None, now)
    if wants("credentials"):
        board.credentials = _credentials(user, user if own_only else None, now)
    if wants("audit"):
        board.audit = _audit(user, now, start)
    if wants("charts"):
        board.charts = _charts(user, user if own_only else None, now)
    return board


def _proposal_rows(queryset: QuerySet[Proposal], due_field: str, now: datetime) -> list[ProposalRow]:
    rows = []
    for proposal in queryset.select_related("agent", "system", "action_type")[:LIST_LIMIT]:
        clock, overdue = sla_clock(getattr(proposal, due_field), now)
        rows.append(ProposalRow(proposal, clock, overdue, _admin("approvals_proposal_change", proposal.pk)))
    return rows


def _oldest_due_first(field_name: str) -> list:
    return [F(field_name).asc(nulls_last=True), "created_at"]


def _queue(user, now: datetime) -> Listing:
    # The approval queue's own question (ProposalQuerySet), so the home page and the queue never disagree.
    waiting = Proposal.objects.visible_to(user).awaiting_decision_by(user)
    total = waiting.count()
    rows = _proposal_rows(waiting.order_by(*_oldest_due_first("sla_due_at")), "sla_due_at", now) if total else []
    return Listing(rows, total, _admin("approvals_proposal_changelist", queue="mine"))


def _reviews(user, now: datetime) -> Listing:
    waiting = Proposal.objects.visible_to(user).awaiting_review_by(user)
    total = waiting.count()
    rows = _proposal_rows(waiting.order_by(*_oldest_due_first("review_due_at")), "review_due_at", now) if total else []
    return Listing(rows, total, _admin("approvals_proposal_changelist", queue="review"))


def _escalations(now: datetime) -> Listing:
    escalated = Proposal.objects.filter(status=ProposalStatus.ESCALATED)
    total = escalated.count()
    rows = _proposal_rows(escalated.order_by(*_oldest_due_first("sla_due_at")), "sla_due_at", now) if total else []
    return Listing(rows, total, _proposals(status__exact=ProposalStatus.ESCALATED))


def _failures(owner, start: datetime) -> Listing:
    failed = Proposal.objects.filter(status=ProposalStatus.FAILED, updated_at__gte=start)
    if owner is not None:
        failed = failed.filter(Q(system__owner=owner) | Q(agent__owner=owner))
    total = failed.count()
    rows = []
    if total:
        for proposal in failed.select_related("agent", "system", "action_type").order_by("-updated_at")[:LIST_LIMIT]:
            when = timezone.localtime(proposal.updated_at)
            rows.append(
                ProposalRow(proposal, f"{when:%d %b %H:%M}", True, _admin("approvals_proposal_change", proposal.pk))
            )
    return Listing(rows, total, _proposals(status__exact=ProposalStatus.FAILED))


def _switches() -> SwitchState:
    """For operators and superusers, who may pull every switch (approvals.killswitch.may_pull)."""
    switch = GlobalSwitch.objects.filter(pk=1).first()
    switch_page = _admin("approvals_kill_switch")
    frozen = System.objects.filter(writes_frozen=True).order_by("slug")
    disabled = Agent.objects.filter(status=AgentStatus.DISABLED).order_by("slug")
    frozen_total, disabled_total = frozen.count(), disabled.count()
    return SwitchState(
        global_on=bool(switch and switch.engaged),
        global_reason=switch.reason if switch and switch.engaged else "",
        global_url=switch_page,
        frozen_systems=Listing(
            [
                Switched(system.slug, system.frozen_reason, f"{switch_page}?{urlencode({'system': system.slug})}")
                for system in (frozen[:LIST_LIMIT] if frozen_total else [])
            ],
            frozen_total,
            _admin("governance_system_changelist"),
        ),
        disabled_agents=Listing(
            [
                Switched(agent.slug, agent.disabled_reason, f"{switch_page}?{urlencode({'agent': agent.slug})}")
                for agent in (disabled[:LIST_LIMIT] if disabled_total else [])
            ],
            disabled_total,
            _admin("governance_agent_changelist", status__exact=AgentStatus.DISABLED),
        ),
        held=Proposal.objects.filter(status=ProposalStatus.ON_HOLD).count(),
        held_url=_proposals(status__exact=ProposalStatus.ON_HOLD),
    )


def _availability() -> AvailabilityPanel:
    systems = list(System.objects.exclude(write_mode="disabled").order_by("slug")[:SYSTEMS_PROBED])
    trouble = []
    for system in systems:
        state = availability(system)
        if state.state != "available" or state.failures:
            trouble.append(
                SystemAvailability(system, state.state, str(state), _admin("governance_system_change", system.pk))
            )
    return AvailabilityPanel(trouble, len(systems))


def _readiness(owner, now: datetime) -> ReadinessPanel:
    agents = Agent.objects.order_by("slug")
    if owner is not None:  # their agents, and the agents that touch their systems
        agents = agents.filter(Q(owner=owner) | Q(grants__system__owner=owner)).distinct()
    total = agents.count()
    rows = []
    for agent in agents[:READINESS_AGENTS] if total else []:
        checklist = readiness(agent, now=now)
        failing = checklist.failing
        rows.append(
            AgentReadiness(
                agent,
                not failing,
                len(failing),
                failing[0] if failing else None,
                _admin("governance_agent_change", agent.pk),
            )
        )
    return ReadinessPanel(rows, total, _admin("governance_agent_changelist"))


def _credentials(user, owner, now: datetime) -> Listing:
    due_at = ExpressionWrapper(F("last_rotated_at") + F("rotation_interval"), output_field=DateTimeField())
    due = Credential.objects.annotate(due_at=due_at).filter(due_at__lt=now + ROTATION_HORIZON)
    if owner is not None:
        due = due.filter(system__owner=owner)
    total = due.count()
    rows = []
    may_change = user.has_perm("connectors.change_credential")
    for credential in due.select_related("system").order_by("due_at")[:LIST_LIMIT] if total else []:
        clock, overdue = sla_clock(credential.due_at, now)
        # Rotating is the owner's (or a superuser's) work, as CredentialAdmin decides; everyone else reads the page.
        rotates = may_change and (user.is_superuser or credential.system.owner_id == user.pk)
        url = _admin("connectors_credential_rotate" if rotates else "connectors_credential_change", credential.pk)
        rows.append(CredentialRow(credential, credential.due_at, clock, overdue, url, rotates))
    return Listing(rows, total, _admin("connectors_credential_changelist"))


def _rules(user, everything: bool) -> Listing:
    rules = ThresholdRule.objects.select_related("system", "action_type", "signed_off_by").prefetch_related("bands")
    if not everything:
        rules = rules.filter(system__owner=user)
    unsigned = [rule for rule in rules.order_by("system__slug", "name")[:RULES_SCANNED] if not rule.is_signed_off]
    rows = [
        RuleRow(
            rule,
            "edited since it was signed off: void" if rule.signed_off_by_id else "never signed off",
            _admin("governance_thresholdrule_change", rule.pk),
        )
        for rule in unsigned[:LIST_LIMIT]
    ]
    return Listing(rows, len(unsigned), _admin("governance_thresholdrule_changelist"))


def _audit(user, now: datetime, start: datetime) -> AuditPanel:
    recent = list(
        AuditEvent.objects.filter(verb__in=AUDIT_ATTENTION)
        .select_related("agent", "person", "system")
        .order_by("-occurred_at", "-id")[:LIST_LIMIT]
    )
    counted = {
        row["verb"]: row["n"]
        for row in AuditEvent.objects.filter(verb__in=AUDIT_COUNTED, occurred_at__gte=start)
        .values("verb")
        .annotate(n=Count("id"))
        .order_by()
    }
    counts = [
        VerbCount(verb, Verb(verb).label, counted.get(verb, 0), audit_trail_url(verb__exact=verb))
        for verb in AUDIT_COUNTED
    ]
    today = timezone.localdate(now).isoformat()
    links = [
        ("The whole audit trail", audit_trail_url()),
        ("Today's events", audit_trail_url(day=today)),
        ("Export today as CSV", _admin("audit_export_csv", day=today)),
    ]
    if user.has_perm("audit.view_auditverification"):
        links.append(("Chain checks", _admin("audit_auditverification_changelist")))
    return AuditPanel(recent, counts, AuditVerification.objects.order_by("-id").first(), links)


def _charts(user, owner, now: datetime) -> Charts:
    start = now - timedelta(days=WINDOW_DAYS)
    proposals = Proposal.objects.filter(created_at__gte=start, created_at__lte=now)
    events = AuditEvent.objects.all()
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
        failures_url=_admin("audit_auditevent_changelist", verb__exact=Verb.FAILED) if reads_audit else "",
        reversals_url=_admin("audit_auditevent_changelist", verb__exact=Verb.REVERSED) if reads_audit else "",
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
        bars.append(BandBar(label, group["total"], segments, _proposals(mode__exact=mode) if mode else _proposals()))
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
