"""The dashboard's panels: each person's work (the queue, reviews, unsigned rules) and the state of things (switches,
escalations, failures, availability, readiness, credentials, the audit trail), each a bounded list with a link to all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from approvals.choices import ProposalStatus
from approvals.models import Proposal
from approvals.readiness import CheckItem, readiness
from approvals.wording import proposal_sentence
from audit.choices import Verb
from audit.links import audit_trail_url
from audit.models import AuditEvent, AuditVerification
from connectors.limits import availability
from connectors.models import AgentCredential, Credential
from console.dashboard.drills import without_drills
from console.dashboard.wording import admin_url, proposals_url, sla_clock
from console.find_record import FindRecordForm
from governance.choices import AgentStatus
from governance.models import Agent, GlobalSwitch, System, ThresholdRule

if TYPE_CHECKING:
    from django.contrib.auth.models import User

LIST_LIMIT = 10  # rows per list; the rest is one "see all" link away
READINESS_AGENTS = 10  # each checklist is a dozen queries: the home page runs at most this many
RULES_SCANNED = 200  # whether a rule is signed off is a digest over its bands, computed in Python
SYSTEMS_PROBED = 50  # availability reads the rate store (Redis or a local file) once per system
AUDIT_ATTENTION = [Verb.DENIED, Verb.READINESS_OVERRIDDEN]  # listed for auditors, newest first
AUDIT_COUNTED = [Verb.DENIED, Verb.REJECTED, Verb.FLAGGED, Verb.READINESS_OVERRIDDEN, Verb.KILL_SWITCH_ON]


# --- What the panels hold -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProposalRow:
    proposal: Proposal
    clock: str  # "due in 2 h 10 min", "overdue by 15 min", or when it failed
    overdue: bool
    url: str
    what: str = ""  # the proposal in one sentence (approvals.wording), linked to its page


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
    credential: Credential | AgentCredential
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
    find: FindRecordForm  # "Find a record": a system and an id → that record's timeline


# --- Building them ------------------------------------------------------------------------------------------------


def _proposal_rows(queryset: QuerySet[Proposal], due_field: str, now: datetime) -> list[ProposalRow]:
    rows = []
    for proposal in queryset.select_related("agent", "system", "action_type__resource")[:LIST_LIMIT]:
        clock, overdue = sla_clock(getattr(proposal, due_field), now)
        url = admin_url("approvals_proposal_change", proposal.pk)
        rows.append(ProposalRow(proposal, clock, overdue, url, proposal_sentence(proposal)))
    return rows


def _oldest_due_first(field_name: str) -> list:
    return [F(field_name).asc(nulls_last=True), "created_at"]


def queue_panel(user: User, now: datetime) -> Listing:
    """What `user` may decide now, oldest SLA first."""
    # The approval queue's own question (ProposalQuerySet), so the home page and the queue never disagree.
    waiting = Proposal.objects.visible_to(user).awaiting_decision_by(user)
    total = waiting.count()
    rows = _proposal_rows(waiting.order_by(*_oldest_due_first("sla_due_at")), "sla_due_at", now) if total else []
    return Listing(rows, total, admin_url("approvals_proposal_changelist", queue="mine"))


def reviews_panel(user: User, now: datetime) -> Listing:
    """Dual approvals waiting for `user`'s second review, oldest review deadline first."""
    waiting = Proposal.objects.visible_to(user).awaiting_review_by(user)
    total = waiting.count()
    rows = _proposal_rows(waiting.order_by(*_oldest_due_first("review_due_at")), "review_due_at", now) if total else []
    return Listing(rows, total, admin_url("approvals_proposal_changelist", queue="review"))


def escalations_panel(now: datetime) -> Listing:
    """Proposals past their SLA, undecided, oldest SLA first."""
    escalated = Proposal.objects.filter(status=ProposalStatus.ESCALATED)
    total = escalated.count()
    rows = _proposal_rows(escalated.order_by(*_oldest_due_first("sla_due_at")), "sla_due_at", now) if total else []
    return Listing(rows, total, proposals_url(status__exact=ProposalStatus.ESCALATED))


def failures_panel(owner: User | None, start: datetime) -> Listing:
    """Executions that failed since `start`, newest first; only `owner`'s systems and agents when one is given."""
    failed = without_drills(Proposal.objects.filter(status=ProposalStatus.FAILED, updated_at__gte=start))
    if owner is not None:
        failed = failed.filter(Q(system__owner=owner) | Q(agent__owner=owner))
    total = failed.count()
    rows = []
    if total:
        for proposal in failed.select_related("agent", "system", "action_type").order_by("-updated_at")[:LIST_LIMIT]:
            when = timezone.localtime(proposal.updated_at)
            rows.append(
                ProposalRow(proposal, f"{when:%d %b %H:%M}", True, admin_url("approvals_proposal_change", proposal.pk))
            )
    return Listing(rows, total, proposals_url(status__exact=ProposalStatus.FAILED))


def switches_panel() -> SwitchState:
    """For operators and superusers, who may pull every switch (approvals.killswitch.may_pull)."""
    switch = GlobalSwitch.objects.filter(pk=1).first()
    switch_page = admin_url("approvals_kill_switch")
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
            admin_url("governance_system_changelist"),
        ),
        disabled_agents=Listing(
            [
                Switched(agent.slug, agent.disabled_reason, f"{switch_page}?{urlencode({'agent': agent.slug})}")
                for agent in (disabled[:LIST_LIMIT] if disabled_total else [])
            ],
            disabled_total,
            admin_url("governance_agent_changelist", status__exact=AgentStatus.DISABLED),
        ),
        held=Proposal.objects.filter(status=ProposalStatus.ON_HOLD).count(),
        held_url=proposals_url(status__exact=ProposalStatus.ON_HOLD),
    )


def availability_panel() -> AvailabilityPanel:
    """The systems (at most SYSTEMS_PROBED) whose circuit breaker is open or whose calls wait."""
    systems = list(System.objects.exclude(write_mode="disabled").order_by("slug")[:SYSTEMS_PROBED])
    trouble = []
    for system in systems:
        state = availability(system)
        if state.state != "available" or state.failures:
            trouble.append(
                SystemAvailability(system, state.state, str(state), admin_url("governance_system_change", system.pk))
            )
    return AvailabilityPanel(trouble, len(systems))


def readiness_panel(owner: User | None, now: datetime) -> ReadinessPanel:
    """Each agent's readiness checklist (at most READINESS_AGENTS of them): passes, or its first failing item."""
    agents = without_drills(Agent.objects.order_by("slug"), slug="slug")  # the drill agent never writes to production
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
                admin_url("governance_agent_change", agent.pk),
            )
        )
    return ReadinessPanel(rows, total, admin_url("governance_agent_changelist"))


def credentials_panel(user: User, owner: User | None, now: datetime) -> Listing:
    """Credentials (systems' shared ones and agents' own) overdue for rotation or due within ROTATION_NOTICE,
    soonest first, linked for what `user` may do."""
    rows: list[CredentialRow] = []
    total = 0
    for model, related in ((Credential, ["system"]), (AgentCredential, ["system", "agent"])):
        due = model.objects.rotation_due(now)
        if owner is not None:
            due = due.filter(system__owner=owner)
        count = due.count()
        total += count
        name = model._meta.model_name
        may_change = user.has_perm(f"connectors.change_{name}")
        for credential in due.select_related(*related).order_by("due_at")[:LIST_LIMIT] if count else []:
            clock, overdue = sla_clock(credential.due_at, now)
            # Rotating is the owner's (or a superuser's) work, as the credential admins decide; others read the page.
            rotates = may_change and (user.is_superuser or credential.system.owner_id == user.pk)
            url = admin_url(f"connectors_{name}_rotate" if rotates else f"connectors_{name}_change", credential.pk)
            rows.append(CredentialRow(credential, credential.due_at, clock, overdue, url, rotates))
    rows.sort(key=lambda row: row.due_at)
    return Listing(rows[:LIST_LIMIT], total, admin_url("connectors_credential_changelist"))


def rules_panel(user: User, everything: bool) -> Listing:
    """Threshold rules not (or no longer) signed off: `user`'s own systems' unless they see everything."""
    rules = ThresholdRule.objects.select_related("system", "action_type", "signed_off_by").prefetch_related("bands")
    if not everything:
        rules = rules.filter(system__owner=user)
    unsigned = [rule for rule in rules.order_by("system__slug", "name")[:RULES_SCANNED] if not rule.is_signed_off]
    rows = [
        RuleRow(
            rule,
            "edited since it was signed off: void" if rule.signed_off_by_id else "never signed off",
            admin_url("governance_thresholdrule_change", rule.pk),
        )
        for rule in unsigned[:LIST_LIMIT]
    ]
    return Listing(rows, len(unsigned), admin_url("governance_thresholdrule_changelist"))


def audit_panel(user: User, now: datetime, start: datetime) -> AuditPanel:
    """The "Find a record" form, recent denials and overrides, the counts since `start`, the last chain check, and
    links into the trail."""
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
        ("Export today as CSV", admin_url("audit_export_csv", day=today)),
    ]
    if user.has_perm("audit.view_auditverification"):
        links.append(("Chain checks", admin_url("audit_auditverification_changelist")))
    return AuditPanel(recent, counts, AuditVerification.objects.order_by("-id").first(), links, FindRecordForm())
