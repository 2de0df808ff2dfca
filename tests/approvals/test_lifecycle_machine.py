"""A hypothesis state machine over the proposal lifecycle, in-process against the real services and the sample CRM.

Rules: propose (auto, single and dual bands of update_credit_limit, add_note), approve (as the assigned approver and
as someone who may not), reject, cancel, expire (the SLA and the maximum age moved into the past, then the beat job),
execute once or twice (a task delivered twice), the kill switch on and off for the agent, reversing the agent's last
hour, and a person changing a credit limit in the CRM by hand (so a decision taken on the old value no longer holds:
an approval then does not count and the proposal is decided again; an approved write goes back to a person as
`stale`, or, auto before and auto still, goes ahead on the new figures). Issue 17 adds: the demo rule adding up the
agent's standing raises on an account (the model computes the band from the sum), the owner setting or removing a
budget of writes (once spent, what would run on its own waits for the approver), the second review of a dual write
after its execution (fine, or flagged: a reversal of that write waits for its approver, who may approve it, and a
worker then reverses it), and a review going overdue (escalated once; the write stays executed). The model keeps
each proposal's expected status and the audit verbs each transition must have written.

Invariants, after every step: the CRM applied at most one write per proposal (exactly one for each executed or
reversed one, none otherwise, and one compensation per reversed one); nothing executed without a valid current
decision (the auto rule with one `auto_approved` event and never stale, or the named approver's `approved` event after
the last time the decision was taken again); each proposal's audit events are
exactly the transitions it went through, one event each; a delivery that finds it finished is counted as a duplicate,
with no event. At the end of each example the audit chain verifies.

One test transaction (rolled back) holds every example: each starts by deleting the previous example's proposals and
reversals and resetting the CRM. Audit events stay (append-only on PostgreSQL), so they are counted per proposal id.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import pytest
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from approvals.choices import (
    AWAITING_DECISION,
    COUNTS_TOWARDS_LIMITS,
    TERMINAL_STATUSES,
    DecisionMode,
    ProposalStatus,
)
from approvals.decisions import (
    NotYourDecision,
    proposal_approve,
    proposal_reject,
    proposal_review,
    proposals_escalate_and_expire,
)
from approvals.execution import proposal_execute
from approvals.freshness import RecordMoved
from approvals.killswitch import SwitchTarget, kill_switch_off, kill_switch_on
from approvals.models import Proposal, Reversal, ReversalStep
from approvals.reversal import reversal_plan
from approvals.reversal_rounds import reversal_run_here
from approvals.reversal_single import proposal_reversal_approve, reversal_awaiting
from approvals.services import ProposalRequest, proposal_cancel, proposal_create
from approvals.transitions import InvalidTransition
from audit.integrity import verify_chain
from audit.models import AuditEvent
from core.errors import AgentDisabled, InvalidState
from governance.models import Agent, AgentBudget, System
from governance.services import agent_budget_save
from sandbox.testing import crm_control

User = get_user_model()

S = ProposalStatus
ACCOUNTS = ("4471", "4472", "4473")
# Raises of the credit limit, away from the band edges (auto < 500 ≤ single < 5000 ≤ dual). The demo rule counts
# the agent's standing proposals on the same account in the last 24 h, so the band a raise falls in is the one its
# sum with them falls in (`expected_band`); the band drawn is where the raise alone would fall.
BANDS = {
    DecisionMode.AUTO: st.integers(min_value=10, max_value=450),
    DecisionMode.SINGLE: st.integers(min_value=600, max_value=4500),
    DecisionMode.DUAL: st.integers(min_value=5500, max_value=9000),
}


@dataclass
class Expected:
    """What the model says about one proposal."""

    status: str
    mode: str
    record: str
    verbs: Counter = field(default_factory=Counter)
    overdue: bool = False  # its SLA and maximum age were moved into the past
    held_from: str = ""
    duplicates: int = 0  # deliveries that found it executed or otherwise finished
    reviewed: bool = False  # its second review was given (dual, after execution)
    review_escalated: bool = False  # its overdue review was escalated (once)
    reversal_waits: bool = False  # flagged after execution: its reversal waits for the approver
    stood_when_flagged: bool = False  # the CRM still held what it wrote when it was flagged (else: left for a person)


def lifecycle_machine(stack) -> type[RuleBasedStateMachine]:
    """The machine class, closed over the session's running CRM."""
    headers = {"Authorization": f"Bearer {stack.crm_token}"}

    class ProposalLifecycle(RuleBasedStateMachine):
        proposals = Bundle("proposals")

        def __init__(self) -> None:
            """A fresh example: no proposals or reversals of the last one, the CRM as seeded, the agent active."""
            super().__init__()
            Reversal.objects.all().delete()
            Proposal.objects.all().delete()
            crm_control(stack.crm_url, "/_control/reset", {})
            self.agent = Agent.objects.get(slug="collections-agent")
            self.switch = SwitchTarget(agent=self.agent)
            if not self.agent.is_active:
                kill_switch_off(target=self.switch, reason="fresh example", channel="command")
            self.approver = User.objects.get(username="approver")
            self.reviewer = User.objects.get(username="reviewer")
            self.model: dict[str, Expected] = {}
            self.reversals = 0
            AgentBudget.objects.filter(agent=self.agent).delete()
            self.budget_writes: int | None = None  # the agent's budget on crm: at most this many writes a day

        @initialize(
            target=proposals, band=st.sampled_from(list(BANDS)), record=st.sampled_from(ACCOUNTS), data=st.data()
        )
        def a_first_proposal(self, band, record, data):
            """Every example starts with proposals to work on (the other rules then have something to decide)."""
            return self.propose_credit_limit(band, record, data)

        @initialize(
            target=proposals, band=st.sampled_from(list(BANDS)), record=st.sampled_from(ACCOUNTS), data=st.data()
        )
        def a_second_proposal(self, band, record, data):
            return self.propose_credit_limit(band, record, data)

        def teardown(self) -> None:
            report = verify_chain()
            assert report.ok, report

        # --- helpers ------------------------------------------------------------------------------------------

        def _move(self, pk: str, status: str, *verbs: str) -> None:
            self.model[pk].status = status
            self.model[pk].verbs.update(verbs)

        def _credit_limit(self, record: str) -> Decimal:
            response = httpx.get(f"{stack.crm_url}/accounts/{record}", headers=headers, timeout=5)
            return Decimal(response.json()["credit_limit"])

        def _create(self, action: str, record: str, payload: dict) -> Proposal | None:
            request = ProposalRequest(system="crm", action=action, record_id=record, payload=payload, reason="machine")
            if not self.agent.is_active:
                with pytest.raises(AgentDisabled):
                    proposal_create(agent=self.agent, request=request, channel="api")
                return None
            proposal, replay = proposal_create(agent=self.agent, request=request, channel="api")
            assert replay is None
            auto = proposal.mode == DecisionMode.AUTO
            assert proposal.status == (S.APPROVED if auto else S.PENDING_APPROVAL)
            expected = Expected(status=proposal.status, mode=proposal.mode, record=record)
            expected.verbs.update(["proposed", "auto_approved"] if auto else ["proposed"])
            self.model[str(proposal.pk)] = expected
            return proposal

        def _moved(self, pk: str) -> bool:
            """Whether the CRM's credit limit differs from what the proposal was decided on, and is not the value it
            writes itself (the model's own reading of DESIGN.md's rule, not approvals/freshness.py's)."""
            proposal = Proposal.objects.get(pk=pk)
            then = (proposal.record_snapshot or {}).get("credit_limit")
            if then is None:
                return False
            now = self._credit_limit(proposal.record_id)
            return now != Decimal(then) and now != Decimal(proposal.payload["credit_limit"])

        def _sweep(self) -> None:
            """What proposals_escalate_and_expire must do, by the model: escalate first, then expire."""
            for pk, expected in self.model.items():
                if expected.overdue and expected.status in (S.PENDING_APPROVAL, S.STALE):
                    # Its approver has no delegate: handed to the on-call group as well (the demo's operator).
                    self._move(pk, S.ESCALATED, "escalated", "reassigned")
                if expected.overdue and expected.status in AWAITING_DECISION:
                    self._move(pk, S.EXPIRED, "expired")

        # --- rules --------------------------------------------------------------------------------------------

        @rule(target=proposals, band=st.sampled_from(list(BANDS)), record=st.sampled_from(ACCOUNTS), data=st.data())
        def propose_credit_limit(self, band, record, data):
            raise_by = data.draw(BANDS[band], label="raise_by")
            new_limit = self._credit_limit(record) + raise_by
            proposal = self._create("update_credit_limit", record, {"credit_limit": f"{new_limit:.2f}"})
            if proposal is None:
                return multiple()  # refused (the kill switch is on): nothing for the bundle
            expected = self.within_budget(
                self.expected_band(record, Decimal(raise_by), exclude=str(proposal.pk)), str(proposal.pk)
            )
            assert proposal.mode == expected, (proposal.mode, expected, band, proposal.impact_amount)
            return str(proposal.pk)

        @rule(target=proposals, record=st.sampled_from(ACCOUNTS), data=st.data())
        def a_dual_raise_approved_and_written(self, record, data):
            """A large raise the approver approves and a worker writes at once: its second review is then due."""
            pk = self.propose_credit_limit(DecisionMode.DUAL, record, data)
            if isinstance(pk, str):
                self.approve(pk, as_approver=True, deliveries=1)
            return pk

        def within_budget(self, mode: str, exclude: str) -> str:
            """What would run on its own goes to one approver once the agent's budget of writes is spent (the model
            counts the agent's standing proposals on crm, as approvals/limits.py must)."""
            if mode != DecisionMode.AUTO or self.budget_writes is None:
                return mode
            standing = sum(1 for pk, e in self.model.items() if pk != exclude and e.status in COUNTS_TOWARDS_LIMITS)
            return DecisionMode.SINGLE if standing + 1 > self.budget_writes else mode

        def expected_band(self, record: str, amount: Decimal, *, exclude: str) -> str:
            """The demo rule's band for a raise of `amount` with the agent's earlier raises on `record` that the
            model says still stand (their impacts as recorded: a refreshed one was decided again on new figures)."""
            standing = [
                pk
                for pk, expected in self.model.items()
                if pk != exclude and expected.record == record and expected.status in COUNTS_TOWARDS_LIMITS
            ]
            earlier = Proposal.objects.filter(pk__in=standing, action_type__name="update_credit_limit")
            total = amount + sum((abs(p.impact_amount or 0) for p in earlier), Decimal(0))
            if total < 500:
                return DecisionMode.AUTO
            return DecisionMode.SINGLE if total < 5000 else DecisionMode.DUAL

        @rule(target=proposals, record=st.sampled_from(ACCOUNTS))
        def propose_note(self, record):
            proposal = self._create("add_note", record, {"text": "Promised to pay on Friday."})
            if proposal is None:
                return multiple()
            assert proposal.mode == self.within_budget(DecisionMode.AUTO, str(proposal.pk)), proposal.decision
            return str(proposal.pk)

        @rule(writes=st.one_of(st.none(), st.integers(min_value=1, max_value=6)))
        def set_budget(self, writes):
            """The agent's owner gives it a budget of writes a day on crm (or takes it away): once spent, what would run
            on its own waits for the approver. Proposals already made keep their decision."""
            owner = User.objects.get(username="owner")
            if writes is None:
                AgentBudget.objects.filter(agent=self.agent).delete()
            else:
                budget = AgentBudget.objects.filter(agent=self.agent).first() or AgentBudget(
                    agent=self.agent, system=System.objects.get(slug="crm")
                )
                budget.max_writes = writes
                agent_budget_save(budget=budget, user=owner, channel="admin")
            self.budget_writes = writes

        def _review_due(self, pk: str) -> bool:
            expected = self.model[pk]
            return expected.mode == DecisionMode.DUAL and expected.status == S.EXECUTED and not expected.reviewed

        @rule(pk=proposals, flag=st.booleans(), then_approve=st.booleans())
        def second_review(self, pk, flag, then_approve):
            """The second reviewer reviews a dual write after its execution (the demo's dual band): fine, or flagged,
            which plans the reversal of that one write, waiting for its approver (who may approve it at once)."""
            expected = self.model[pk]
            review = {"proposal_id": pk, "user": self.reviewer, "channel": "admin", "flag": flag, "comment": "machine"}
            if not self._review_due(pk):
                with pytest.raises(InvalidTransition):
                    proposal_review(**review)
                return
            proposal_review(**review)
            expected.reviewed = True
            if not flag:
                expected.verbs.update(["reviewed"])
                return
            expected.verbs.update(["flagged", "reversal_planned"])
            expected.reversal_waits = True
            # A later write of ours on the record (or its reversal) changed it since: then the plan leaves it to a
            # person rather than overwrite what came after.
            expected.stood_when_flagged = self._stands(pk)
            (step,) = reversal_awaiting(Proposal.objects.get(pk=pk)).steps.all()
            assert (step.kind == ReversalStep.Kind.REVERSIBLE) == expected.stood_when_flagged, step.explanation
            if then_approve:
                self.approve_flagged_reversal(pk)

        def _due(self) -> list[str]:
            # In the order they were proposed (ids are random: sorting them would make the draws depend on them).
            return [pk for pk in self.model if self._review_due(pk)]

        @precondition(lambda self: bool(self._due()))
        @rule(data=st.data(), flag=st.booleans(), then_approve=st.booleans())
        def second_review_of_a_due_write(self, data, flag, then_approve):
            """As second_review, on a write whose review is due (drawn from the model, so the rule is not rare)."""
            self.second_review(data.draw(st.sampled_from(self._due()), label="pk"), flag, then_approve)

        @precondition(lambda self: bool(self._due()))
        @rule(data=st.data())
        def a_due_review_goes_overdue(self, data):
            self.review_overdue(data.draw(st.sampled_from(self._due()), label="pk"))

        @rule(pk=proposals)
        def approve_flagged_reversal(self, pk):
            """The write's approver approves the reversal a flag asked for; a worker runs it (here, in-process)."""
            expected = self.model[pk]
            waiting = reversal_awaiting(Proposal.objects.get(pk=pk))
            assert (waiting is not None) == expected.reversal_waits
            if waiting is None:
                return
            stands = expected.status == S.EXECUTED and self._stands(pk)  # before the reversal runs
            reversal = proposal_reversal_approve(reversal_id=waiting.pk, user=self.approver, channel="admin")
            expected.reversal_waits = False
            expected.verbs.update(["reversal_planned"])  # the approval, on the write's own trail
            reversal = reversal_run_here(reversal_id=reversal.pk, timeout=20)
            (step,) = reversal.steps.all()
            if not expected.stood_when_flagged:  # planned as left for a person: nothing runs, nothing is written
                assert step.status == ReversalStep.Status.HELD, (step.kind, step.status, step.explanation)
            elif expected.status == S.REVERSED:  # a window reversal undid it meanwhile: nothing left to do
                assert step.status == ReversalStep.Status.SKIPPED, (step.kind, step.status, step.explanation)
            elif stands:
                assert step.status == ReversalStep.Status.DONE, (step.kind, step.explanation, step.last_error)
                self._move(pk, S.REVERSED, "reversed")
            else:  # changed between the flag and the approval: found so when it runs, and left for a person
                assert step.status == ReversalStep.Status.HELD, (step.kind, step.status, step.explanation)
                expected.verbs.update(["reversal_held"])

        def _stands(self, pk: str) -> bool:
            """Whether the CRM still holds the credit limit this executed write set."""
            proposal = Proposal.objects.get(pk=pk)
            return self._credit_limit(proposal.record_id) == Decimal(proposal.payload["credit_limit"])

        @rule(pk=proposals)
        def review_overdue(self, pk):
            """The second review's time passes (database clock); the beat job runs: escalated once, status kept."""
            Proposal.objects.filter(pk=pk, review_due_at__isnull=False).update(review_due_at="2000-01-01T00:00:00Z")
            proposals_escalate_and_expire()
            expected = self.model[pk]
            if self._review_due(pk) and not expected.review_escalated:
                expected.review_escalated = True
                expected.verbs.update(["escalated"])
            self._sweep()

        @rule(
            pk=proposals,
            as_approver=st.sampled_from([True, True, False]),
            deliveries=st.integers(min_value=0, max_value=2),
        )
        def approve(self, pk, as_approver, deliveries):
            """Approve; then the worker's task may arrive at once, once or twice (deliveries)."""
            expected = self.model[pk]
            user = self.approver if as_approver else self.reviewer
            if expected.status in AWAITING_DECISION and expected.overdue:
                # Past its maximum age: the approval expires it (by the database clock) instead of deciding it.
                with pytest.raises(InvalidTransition, match="expired"):
                    proposal_approve(proposal_id=pk, user=user, channel="admin")
                self._move(pk, S.EXPIRED, "expired")
            elif expected.status not in AWAITING_DECISION:
                with pytest.raises(InvalidTransition):
                    proposal_approve(proposal_id=pk, user=user, channel="admin")
            elif not as_approver:
                with pytest.raises(NotYourDecision):
                    proposal_approve(proposal_id=pk, user=user, channel="admin")
                expected.verbs.update(["denied"])
            elif self._moved(pk):
                with pytest.raises(RecordMoved):  # decided again on the record as it is; this approval does not count
                    proposal_approve(proposal_id=pk, user=user, channel="admin")
                expected.verbs.update(["refreshed"])
                expected.mode = Proposal.objects.get(pk=pk).mode
            else:
                assert proposal_approve(proposal_id=pk, user=user, channel="admin").status == S.APPROVED
                self._move(pk, S.APPROVED, "approved")
                if deliveries:
                    self.execute(pk, deliveries)

        @precondition(lambda self: any(e.status in AWAITING_DECISION for e in self.model.values()))
        @rule(data=st.data(), deliveries=st.integers(min_value=0, max_value=2))
        def the_approver_decides_a_waiting_one(self, data, deliveries):
            """As approve, by the approver, on a proposal that waits for a decision (drawn from the model)."""
            waiting = [pk for pk, e in self.model.items() if e.status in AWAITING_DECISION]  # in proposal order
            self.approve(data.draw(st.sampled_from(waiting), label="pk"), as_approver=True, deliveries=deliveries)

        @rule(pk=proposals)
        def reject(self, pk):
            if self.model[pk].status in AWAITING_DECISION and self.model[pk].overdue:
                # Past its maximum age: rejecting it, like approving it, finds it expired.
                with pytest.raises(InvalidTransition, match="expired"):
                    proposal_reject(proposal_id=pk, user=self.approver, channel="admin", reason="no")
                self._move(pk, S.EXPIRED, "expired")
                return
            if self.model[pk].status not in AWAITING_DECISION:
                with pytest.raises(InvalidTransition):
                    proposal_reject(proposal_id=pk, user=self.approver, channel="admin", reason="no")
                return
            assert (
                proposal_reject(proposal_id=pk, user=self.approver, channel="admin", reason="no").status == S.REJECTED
            )
            self._move(pk, S.REJECTED, "rejected")

        @rule(pk=proposals)
        def cancel(self, pk):
            if not self.agent.is_active:
                with pytest.raises(AgentDisabled):
                    proposal_cancel(proposal_id=pk, agent=self.agent, channel="api")
            elif self.model[pk].status in AWAITING_DECISION and self.model[pk].overdue:
                with pytest.raises(InvalidState, match="expired"):
                    proposal_cancel(proposal_id=pk, agent=self.agent, channel="api")
                self._move(pk, S.EXPIRED, "expired")
            elif self.model[pk].status not in AWAITING_DECISION:
                with pytest.raises(InvalidState):
                    proposal_cancel(proposal_id=pk, agent=self.agent, channel="api")
            else:
                assert proposal_cancel(proposal_id=pk, agent=self.agent, channel="api").status == S.CANCELLED
                self._move(pk, S.CANCELLED, "cancelled")

        @rule(pk=proposals)
        def expire(self, pk):
            """Its SLA and maximum age pass (the services use the database clock); the beat job runs."""
            Proposal.objects.filter(pk=pk, expires_at__isnull=False).update(
                expires_at="2000-01-01T00:00:00Z", sla_due_at="2000-01-01T00:00:00Z"
            )
            if self.model[pk].mode != DecisionMode.AUTO:
                self.model[pk].overdue = True
            proposals_escalate_and_expire()
            self._sweep()

        @rule(pk=proposals, deliveries=st.integers(min_value=1, max_value=2))
        def execute(self, pk, deliveries):
            moved = self.model[pk].status == S.APPROVED and self._moved(pk)
            outcomes = [proposal_execute(proposal_id=pk).status for _ in range(deliveries)]
            if moved and outcomes[0] == "stale":  # not written: back to a person, decided on the record as it is
                assert outcomes[1:] == ["suppressed"][: deliveries - 1]
                self._move(pk, S.STALE, "executing", "stale")
                self.model[pk].mode = Proposal.objects.get(pk=pk).mode
                assert self.model[pk].mode != DecisionMode.AUTO
            elif moved:  # auto before and auto still: written on the new figures
                assert self.model[pk].mode == DecisionMode.AUTO, "a person's approval went ahead on a moved record"
                assert outcomes == ["executed", "suppressed"][:deliveries]
                self._move(pk, S.EXECUTED, "executing", "refreshed", "executed")
                self.model[pk].duplicates += deliveries - 1
            elif self.model[pk].status == S.APPROVED:
                assert outcomes == ["executed", "suppressed"][:deliveries]
                self._move(pk, S.EXECUTED, "executing", "executed")
                self.model[pk].duplicates += deliveries - 1
            else:
                assert outcomes == ["suppressed"] * deliveries
                if self.model[pk].status in TERMINAL_STATUSES:  # not on hold, awaiting a decision: no duplicate
                    self.model[pk].duplicates += deliveries

        @rule(
            pk=proposals,
            change=st.integers(min_value=-900, max_value=900).filter(bool),
            then=st.sampled_from(["", "approve", "execute"]),
        )
        def someone_edits_the_crm(self, pk, change, then):
            """A person changes the credit limit of a proposal's record by hand. Not on a record with an executed write
            of ours still standing: reversing that write would then rightly stop at the person's change, which
            tests/approvals/test_rollback.py covers."""
            record = self.model[pk].record
            if any(e.record == record and e.status == S.EXECUTED for e in self.model.values()):
                return
            new = max(Decimal("100.00"), self._credit_limit(record) + change)
            crm_control(stack.crm_url, "/_control/set", {"account": record, "fields": {"credit_limit": f"{new:.2f}"}})
            # What then happens to this proposal, at once (the steps are also drawn on their own, later or never).
            if then == "approve":
                self.approve(pk, as_approver=True, deliveries=1)
            elif then == "execute":
                self.execute(pk, deliveries=1)

        @rule(on=st.booleans())
        def kill_switch(self, on):
            """Turn the agent's switch on or off (a second "on" or "off" changes nothing)."""
            was_on = not self.agent.is_active
            turn = kill_switch_on if on else kill_switch_off
            assert turn(target=self.switch, reason="machine", channel="command").changed is (on is not was_on)
            if on is was_on:
                return
            for pk, expected in self.model.items():
                if on and expected.status in (*AWAITING_DECISION, S.APPROVED):
                    expected.held_from = expected.status
                    self._move(pk, S.ON_HOLD, "held")
                elif not on and expected.status == S.ON_HOLD:
                    self._move(pk, expected.held_from, "released")
                    expected.held_from = ""

        @precondition(lambda self: any(expected.status == S.EXECUTED for expected in self.model.values()))
        @rule()
        def reverse_last_hour(self):
            executed = {pk for pk, expected in self.model.items() if expected.status == S.EXECUTED}
            reversal = reversal_run_here(
                reversal_id=reversal_plan(agent=self.agent, hours=1, channel="command").pk, timeout=20
            )
            self.reversals += 1
            for step in reversal.steps.all():
                pk = str(step.proposal_id)
                if pk not in executed:
                    assert step.kind == ReversalStep.Kind.ALREADY_REVERSED, (step.kind, step.explanation)
                    continue
                # We are the CRM's only writer: every write of ours is found as we left it and goes back.
                assert (step.kind, step.status) == (ReversalStep.Kind.REVERSIBLE, ReversalStep.Status.DONE), (
                    step.kind,
                    step.status,
                    step.explanation,
                    step.last_error,
                )
                self._move(pk, S.REVERSED, "reversed")
                executed.discard(pk)
            assert not executed, f"executed writes the reversal did not plan: {executed}"

        # --- invariants ---------------------------------------------------------------------------------------

        @invariant()
        def statuses_match_the_model(self):
            actual = dict(Proposal.objects.filter(pk__in=list(self.model)).values_list("pk", "status"))
            assert {str(pk): status for pk, status in actual.items()} == {
                pk: expected.status for pk, expected in self.model.items()
            }

        @invariant()
        def the_crm_applied_at_most_one_write_per_proposal(self):
            """The CRM counts applied writes per idempotency key: the proposal id, and `reverse-<id>` for its undo."""
            applied = crm_control(stack.crm_url, "/_stats")["writes_by_key"]
            wrote = {pk for pk, expected in self.model.items() if expected.status in (S.EXECUTED, S.REVERSED)}
            undone = {f"reverse-{pk}" for pk, expected in self.model.items() if expected.status == S.REVERSED}
            assert applied == dict.fromkeys(wrote | undone, 1)

        @invariant()
        def nothing_executed_without_a_decision(self):
            written = Proposal.objects.filter(pk__in=list(self.model), status__in=[S.EXECUTED, S.REVERSED])
            for proposal in written:
                events = list(
                    AuditEvent.objects.filter(proposal_id=proposal.pk).order_by("id").values_list("verb", "actor_type")
                )
                verbs = Counter(verb for verb, _ in events)
                wrote = max(i for i, (verb, _) in enumerate(events) if verb == "executed")
                if proposal.mode == DecisionMode.AUTO:
                    assert proposal.decided_by_id is None and verbs["auto_approved"] == 1 and verbs["approved"] == 0
                    assert verbs["stale"] == 0
                    continue
                assert proposal.decided_by_id == self.approver.pk and verbs["auto_approved"] == 0
                # Decided again (stale, or a person's approval that did not count): a later approval before the write.
                undone = [
                    i
                    for i, (verb, who) in enumerate(events)
                    if verb == "stale" or (verb, who) == ("refreshed", "human")
                ]
                approved = [i for i, (verb, _) in enumerate(events) if verb == "approved" and i < wrote]
                assert approved and (not undone or approved[-1] > undone[-1]), events

        @invariant()
        def duplicate_deliveries_are_counted(self):
            actual = dict(Proposal.objects.filter(pk__in=list(self.model)).values_list("pk", "duplicate_deliveries"))
            assert {str(pk): count for pk, count in actual.items()} == {
                pk: expected.duplicates for pk, expected in self.model.items()
            }

        @invariant()
        def one_audit_event_per_transition(self):
            events = AuditEvent.objects.filter(proposal_id__in=list(self.model)).values_list("proposal_id", "verb")
            actual: dict[str, Counter] = {pk: Counter() for pk in self.model}
            for proposal_id, verb in events:
                actual[str(proposal_id)][verb] += 1
            assert actual == {pk: expected.verbs for pk, expected in self.model.items()}

    return ProposalLifecycle


@pytest.mark.slow
@pytest.mark.django_db
def test_the_proposal_lifecycle_keeps_its_invariants(crm_demo, stack_processes):
    machine = lifecycle_machine(stack_processes)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=40,
            stateful_step_count=15,
            deadline=None,
            database=None,  # nothing written under the working tree; a failure prints its steps
            # No "explain" phase: re-running each shrunk failure's variants against the CRM takes minutes.
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
