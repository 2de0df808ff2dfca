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

Rollback drills are not activity: the built-in agent `gatehouse-drill`'s writes and reversals are left out of the
charts, the failures list and the readiness list, and counted on one "drill" line under the charts (drills.py).

Read-only and bounded: every list is a LIMIT with a count and a link to the filtered changelist, every chart one
aggregate query; the readiness checklists run for at most READINESS_AGENTS agents. Nothing is cached: a decision made
a second ago is gone from the queue on the next page load.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from console.dashboard.charts import WINDOW_DAYS, Charts, charts_panel
from console.dashboard.panels import (
    AuditPanel,
    AvailabilityPanel,
    Listing,
    ReadinessPanel,
    SwitchState,
    audit_panel,
    availability_panel,
    credentials_panel,
    escalations_panel,
    failures_panel,
    queue_panel,
    readiness_panel,
    reviews_panel,
    rules_panel,
    switches_panel,
)
from governance.choices import Role

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

    queue = queue_panel(user, now)
    if wants("queue") or queue.total:  # a person named as approver has a queue whatever their groups
        board.queue = queue
    if wants("reviews"):
        board.reviews = reviews_panel(user, now)
    if wants("rules"):
        board.rules = rules_panel(user, everything)
    if wants("switches"):
        board.switches = switches_panel()
    if wants("escalations"):
        board.escalations = escalations_panel(now)
    if wants("failures"):
        board.failures = failures_panel(user if own_only else None, start)
    if wants("availability"):
        board.availability = availability_panel()
    if wants("readiness"):
        board.readiness = readiness_panel(user if own_only else None, now)
    if wants("credentials"):
        board.credentials = credentials_panel(user, user if own_only else None, now)
    if wants("audit"):
        board.audit = audit_panel(user, now, start)
    if wants("charts"):
        board.charts = charts_panel(user, user if own_only else None, now)
    return board
