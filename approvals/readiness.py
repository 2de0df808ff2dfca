"""The readiness checklist: may this agent write to production? Computed live from the inventory, never stored.

Each item says whether it holds, why not in plain words, and where in the admin to fix it. Enabling production
writes for an agent (a write grant on a production system, or a system switched to `enabled` that the agent has
write grants on) is refused until every item holds; a superuser may override with a reason, which is audited
(`production_writes_allowed`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from approvals.models import Drill, Proposal
from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.models import AgentCredential, Credential, credential_for
from governance.choices import Access, Environment, WriteMode
from governance.models import ActionType, Agent, ScopeGrant, System, ThresholdRule

DRILL_FRESH_FOR = timedelta(days=30)  # a passed drill older than this no longer counts
PROBATION = timedelta(days=30)  # an agent's first days: one workflow, one system of record, one approver


@dataclass(frozen=True)
class CheckItem:
    key: str
    label: str
    ok: bool
    reason: str
    fix_url: str = ""


@dataclass
class Readiness:
    agent: Agent
    items: list[CheckItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(item.ok for item in self.items)

    @property
    def failing(self) -> list[CheckItem]:
        return [item for item in self.items if not item.ok]


def _admin(name: str, *args: object) -> str:
    return reverse(f"admin:{name}", args=args)


@dataclass(frozen=True)
class _Reach:
    """What an agent can touch, counting grants about to be saved: its grants, the systems, those it writes to."""

    agent: Agent
    now: datetime
    grants: list[ScopeGrant]

    @property
    def systems(self) -> dict[int, System]:
        return {grant.system_id: grant.system for grant in self.grants}

    @property
    def writes(self) -> list[ScopeGrant]:
        return [grant for grant in self.grants if grant.access == Access.WRITE]

    @property
    def written(self) -> dict[int, System]:
        return {grant.system_id: grant.system for grant in self.writes}


def readiness(
    agent: Agent,
    *,
    extra_grants: Iterable[ScopeGrant] = (),
    changed_systems: Iterable[System] = (),
    now: datetime | None = None,
) -> Readiness:
    """The checklist for `agent`, counting `extra_grants` (a grant about to be saved) as if they were saved, and
    judging each system in `changed_systems` (one about to be saved) as it will be, not as it is."""
    now = now or timezone.now()
    grants = [grant for grant in agent.grants.select_related("system__owner", "resource") if grant.is_current(now)]
    pending = list(extra_grants)
    grants = [grant for grant in grants if grant.pk not in {g.pk for g in pending if g.pk}] + pending
    changed = {system.pk: system for system in changed_systems if system.pk}
    for grant in grants:
        if grant.system_id in changed:
            grant.system = changed[grant.system_id]
    reach = _Reach(agent=agent, now=now, grants=grants)
    rules, approvers = _rules(reach)
    items = [_owners(reach), _scopes(reach), _credentials(reach), _drills(reach), rules]
    if agent.created_at and agent.created_at > now - PROBATION:
        items.append(_probation(reach, approvers))
    return Readiness(agent=agent, items=items)


def _owners(reach: _Reach) -> CheckItem:
    """1. Every system it touches has an owner and a rollback contact."""
    systems = reach.systems
    missing = [system for system in systems.values() if not system.rollback_contact or not system.owner_id]
    return CheckItem(
        "owners",
        "Every system it touches has an owner and a rollback contact",
        not missing,
        "; ".join(f"{system} has no rollback contact" for system in missing)
        or f"{len(systems)} system(s), each with an owner and a rollback contact.",
        _admin("governance_system_change", missing[0].pk) if missing else "",
    )


def _scopes(reach: _Reach) -> CheckItem:
    """2. Scopes are documented: each grant says why; write grants name their actions."""
    grants = reach.grants
    undocumented = [grant for grant in grants if not grant.justification.strip()]
    unnamed = [grant for grant in reach.writes if not grant.actions]
    problems = [f"the grant on {g.system}.{g.resource.name} gives no justification" for g in undocumented] + [
        f"the write grant on {g.system}.{g.resource.name} names no action" for g in unnamed
    ]
    first = (undocumented + unnamed)[:1]
    return CheckItem(
        "scopes",
        "Its scopes are documented",
        not problems and bool(grants),
        "; ".join(problems) or (f"{len(grants)} grant(s), each justified." if grants else "It has no grants."),
        _admin("governance_scopegrant_change", first[0].pk) if first and first[0].pk else "",
    )


def _credentials(reach: _Reach) -> CheckItem:
    """3. The credential it writes to each system with: its own (not the system's shared account), not admin-level
    or shared with people, rotation scheduled and not overdue."""
    problems: list[str] = []
    soon: list[str] = []
    fix = ""
    agent = reach.agent
    for system in reach.written.values():
        credential = credential_for(system, agent)
        whose = (
            f"{system}'s credential"
            if credential is None or credential.holder is None
            else f"its credential at {system}"
        )
        if credential is None:
            problems.append(f"{system} has no vaulted credential")
        else:
            if credential.holder is None:
                problems.append(
                    f"it would write to {system} with the system's shared credential: give it its own, so {system}'s "
                    "logs name it"
                )
            if credential.is_admin_level:
                problems.append(f"{whose} is admin-level")
            if getattr(credential, "is_shared", False):
                problems.append(f"{whose} is shared with people or other software")
            state = credential.rotation_state(reach.now) if credential.rotation_interval else ""
            if not credential.rotation_interval:
                problems.append(f"{whose} has no rotation schedule")
            elif state == "overdue":
                problems.append(f"{whose} was due for rotation on {credential.rotation_due_at:%Y-%m-%d}")
            elif state == "due soon":
                soon.append(f"{whose} is due for rotation on {credential.rotation_due_at:%Y-%m-%d}")
        if problems and not fix:
            fix = _admin("governance_system_change", system.pk)
    return CheckItem(
        "credentials",
        "Credentials are its own, least-privilege and rotated",
        not problems,
        "; ".join(problems)
        or f"{len(reach.written)} system(s) written to, each with its own sound credential."
        + "".join(f" Note: {line}." for line in soon),
        fix,
    )


def _drills(reach: _Reach) -> CheckItem:
    """4. A rollback drill passed recently for every production system it writes to (on its staging twin)."""
    problems: list[str] = []
    fix = ""
    for system in reach.written.values():
        if system.environment != Environment.PRODUCTION:
            continue
        twin = system.staging_twin
        if twin is None:
            problems.append(f"{system} has no staging twin to drill on")
            fix = fix or _admin("governance_system_change", system.pk)
            continue
        drill = Drill.objects.filter(system=twin, passed=True, finished_at__gte=reach.now - DRILL_FRESH_FOR).first()
        if drill is None:
            problems.append(f"no rollback drill on {twin} passed in the last {DRILL_FRESH_FOR.days} days")
            fix = fix or _admin("approvals_drill_changelist") + f"?system__id__exact={twin.pk}"
    return CheckItem(
        "drill",
        "A rollback drill passed recently",
        not problems,
        "; ".join(problems) or "Every production system it writes to had a passed drill on its staging twin.",
        fix,
    )


def _rules(reach: _Reach) -> tuple[CheckItem, set[str]]:
    """5. The threshold rules deciding its writes are signed off by the business owner; and who approves them."""
    problems: list[str] = []
    fix = ""
    approvers: set[str] = set()
    for grant in reach.writes:
        for name in grant.actions:
            action = ActionType.objects.filter(system=grant.system, name=name).first()
            rule = _rule_for(grant.system, action)
            if rule is None:
                problems.append(f"no threshold rule decides {grant.system}.{name}")
                fix = fix or _admin("governance_thresholdrule_add")
                continue
            if not rule.is_signed_off:
                void = " (edited after its sign-off, which that voided)" if rule.signed_off_by_id else ""
                problems.append(
                    f"rule “{rule.name}” ({grant.system}.{name}) is not signed off by the business owner{void}"
                )
                # The rule page's Sign off button, which leads to the page showing what is signed.
                fix = fix or _admin("governance_thresholdrule_change", rule.pk) + "#sign-off"
            for band in rule.bands.all():
                if band.approver_id:
                    approvers.add(f"user {band.approver_id}")
                if band.approver_group_id:
                    approvers.add(f"group {band.approver_group_id}")
    item = CheckItem(
        "rules",
        "Threshold rules are signed off by the business owner",
        not problems,
        "; ".join(problems) or "Every action it may write is decided by a signed-off rule.",
        fix,
    )
    return item, approvers


def _probation(reach: _Reach, approvers: set[str]) -> CheckItem:
    """6. The first 30 days: one workflow (one kind of record), one system of record, one approver."""
    workflows = {(grant.system_id, grant.resource_id) for grant in reach.writes}
    records = {system.pk for system in reach.written.values() if system.category == "record"}
    problems = []
    if len(workflows) > 1:
        problems.append(f"it writes {len(workflows)} kinds of record (one workflow at first)")
    if len(records) > 1:
        problems.append(f"it writes to {len(records)} systems of record (one at first)")
    if len(approvers) > 1:
        problems.append(f"its writes go to {len(approvers)} different approvers (one at first)")
    agent = reach.agent
    days = (agent.created_at + PROBATION - reach.now).days + 1
    return CheckItem(
        "probation",
        "First 30 days: one workflow, one system of record, one approver",
        not problems,
        "; ".join(problems) + f" — {days} day(s) left of its first 30."
        if problems
        else f"Within bounds; {days} day(s) left of its first 30.",
        _admin("governance_agent_change", agent.pk) if problems else "",
    )


def _rule_for(system: System, action: ActionType | None) -> ThresholdRule | None:
    rules = ThresholdRule.objects.filter(system=system).prefetch_related("bands")
    if action is not None:
        specific = rules.filter(action_type=action).first()
        if specific is not None:
            return specific
    return rules.filter(action_type__isnull=True).first()


@dataclass(frozen=True)
class WriteFacts:
    """What the pause check reads about a write, already read by the caller in a statement of its own (the worker's
    claim reads them with the proposal, under its row lock, rather than in four more round trips): the credential the
    write would be made with (`credential_for`) and when the system's staging twin last passed a rollback drill."""

    credential: Credential | AgentCredential | None
    last_drill: datetime | None


def production_writes_pause(
    system: System, *, agent: Agent | None = None, now: datetime | None = None, known: WriteFacts | None = None
) -> str | None:
    """Why a production system's writes (by `agent`) pause now although they were allowed when enabled, or None: the
    credential they are made with (the agent's own, else the system's shared one) is overdue for rotation, or the
    system's last passed rollback drill has grown older than DRILL_FRESH_FOR. Checked again just before every write
    (approvals/execution.py), so a checklist that stops holding stops the writes with it. A system never drilled is
    the enabling gate's matter, not a pause (its checklist failed then, or was overridden by a superuser, audited).
    `known`: those facts as the caller read them just now, instead of reading them here."""
    if not takes_production_writes(system.environment, system.write_mode):
        return None
    now = now or timezone.now()
    credential = known.credential if known is not None else credential_for(system, agent)
    if credential is not None and credential.rotation_interval and credential.rotation_state(now) == "overdue":
        whose = f"the credential of {system}" if credential.holder is None else f"the credential of {agent} at {system}"
        return f"readiness: {whose} was due for rotation on {credential.rotation_due_at:%Y-%m-%d}"
    if system.staging_twin_id:
        if known is not None:
            last = known.last_drill
        else:
            drills = Drill.objects.filter(system_id=system.staging_twin_id, passed=True, finished_at__isnull=False)
            last = drills.order_by("-finished_at").values_list("finished_at", flat=True).first()
        if last is not None and last < now - DRILL_FRESH_FOR:
            return (
                f"readiness: the last passed rollback drill of {system} ran on {last:%Y-%m-%d}, more than "
                f"{DRILL_FRESH_FOR.days} days ago"
            )
    return None


def execution_pause(proposal: Proposal, *, known: WriteFacts | None = None) -> str | None:
    """Why this approved write waits now although it was allowed when decided, or None: its system's production
    writes pause (`production_writes_pause`), or the rule that approved it automatically is no longer signed off
    (edited since): an automatic decision lasts only as long as the sign-off it rests on. A person's approval
    stands on its own. Checked just before the write and by the job that resumes paused writes.

    `known`: the caller (the worker's claim) read the pause's facts and the proposal's rule with the proposal, just
    now; only the rule's bands are read here then.

    First of all, on any system: the action is paused because its MCP tool changed on the server since it was
    approved (tool pinning, connectors/mcp/pinning.py). The write waits for a person to approve the new definition,
    whatever anyone approved of the proposal before."""
    if proposal.action_type.paused:
        return f"readiness: {proposal.action_type} is paused: {proposal.action_type.paused_reason}"
    system = proposal.system
    pause = production_writes_pause(system, agent=proposal.agent, known=known)
    if pause or not takes_production_writes(system.environment, system.write_mode):
        return pause
    if proposal.decided_by_id is None and proposal.rule_id is not None:
        if known is not None:
            rule = proposal.rule
            assert rule is not None  # read with the proposal (rule_id is set)
        else:
            rule = ThresholdRule.objects.prefetch_related("bands").get(pk=proposal.rule_id)
        if not rule.is_signed_off:
            return f"readiness: rule “{rule.name}”, which approved it, is no longer signed off (edited since)"
    return None


def takes_production_writes(environment: str, write_mode: str) -> bool:
    """A system in production whose writes go through (enabled, or propose-only's manual tasks)."""
    return environment == Environment.PRODUCTION and write_mode in (WriteMode.ENABLED, WriteMode.PROPOSE_ONLY)


def enables_production_writes(grant: ScopeGrant) -> bool:
    """A write grant on a production system that takes writes: what the readiness gate guards."""
    system = grant.system
    return grant.access == Access.WRITE and takes_production_writes(system.environment, system.write_mode)


def system_change_gains_production_writes(system: System, *, environment: str, write_mode: str) -> list[Agent]:
    """The agents that a change of `system` to `environment` and `write_mode` gives production writes, which it did
    not give before; [] when it gives none. Any path counts: enabling writes on a production system, or moving a
    system that already takes writes from staging to production (the same outcome by two steps)."""
    if not takes_production_writes(environment, write_mode):
        return []
    before = System.objects.filter(pk=system.pk).values_list("environment", "write_mode").first() if system.pk else None
    if before is not None and takes_production_writes(*before):
        return []
    return list(Agent.objects.filter(grants__system=system, grants__access=Access.WRITE).distinct())


def production_writes_failing(
    agents: Iterable[Agent], *, extra_grants: Iterable[ScopeGrant] = (), changed_systems: Iterable[System] = ()
) -> list[str]:
    """What stands between these agents and production writes: one line per failing item (empty: nothing)."""
    extra, systems = list(extra_grants), list(changed_systems)
    failing: list[str] = []
    for agent in agents:
        mine = [grant for grant in extra if grant.agent_id == agent.pk]
        checklist = readiness(agent, extra_grants=mine, changed_systems=systems)
        failing += [f"{agent}: {item.label.lower()} — {item.reason}" for item in checklist.failing]
    return failing


def production_writes_gate(
    agents: Iterable[Agent],
    *,
    what: str,
    user: User | None,
    override_reason: str = "",
    extra_grants: Iterable[ScopeGrant] = (),
    changed_systems: Iterable[System] = (),
) -> list[str]:
    """The gate every door puts before a change that gives production writes (the admin's forms, apply_policy):
    refused while the checklist fails, unless a superuser gives a reason. Returns what fails (empty: nothing), which
    the door records with `readiness_override` once the change is saved."""
    failing = production_writes_failing(agents, extra_grants=extra_grants, changed_systems=changed_systems)
    if failing and not (" ".join(override_reason.split()) and user is not None and user.is_superuser):
        raise refusal(what, failing, user=user)
    return failing


def refusal(what: str, failing: list[str], *, user: User | None) -> ValidationError:
    superuser = user is not None and user.is_superuser
    return ValidationError(
        [f"{what} is refused until the readiness checklist passes:", *failing]
        + (["As a superuser you may override it: give a reason."] if superuser else [])
    )


def readiness_override(
    *,
    what: str,
    failing: list[str],
    reason: str,
    user: User | None,
    agent: Agent | None = None,
    channel: Channel | str = Channel.ADMIN,
) -> None:
    """A superuser enables production writes although the checklist fails: allowed with a reason, audited."""
    reason = " ".join((reason or "").split())
    if user is None or not user.is_superuser:
        raise PermissionDenied("Only a superuser may override the readiness checklist.")
    if not reason:
        raise ValidationError("Give a reason for overriding the readiness checklist.")
    audit_record(
        verb=Verb.READINESS_OVERRIDDEN,
        actor=user,
        channel=channel,
        agent=agent,
        input={"what": what, "failing": failing, "reason": reason},
        outcome="overridden",
        summary=f"{user.get_username()} overrode the readiness checklist for {what}: {reason} "
        f"({len(failing)} item(s) failing).",
    )
