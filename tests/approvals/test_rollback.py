"""The way back: the kill switch, reversing a window of writes, rollback drills — against the real sample CRM."""

from __future__ import annotations

import io
import threading
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import CommandError, call_command

from approvals import reversal_rounds as reversal_module
from approvals.choices import ProposalStatus
from approvals.decisions import proposal_approve
from approvals.drills import drill_request, rollback_drill
from approvals.execution import proposal_execute
from approvals.killswitch import SwitchTarget, kill_switch_off, kill_switch_on
from approvals.models import Drill, Proposal, Reversal, ReversalStep
from approvals.reversal import ReversalRefused, reversal_plan, reversal_report, reversal_start
from approvals.reversal_rounds import reversal_run_here
from approvals.transitions import InvalidTransition
from audit.models import AuditEvent
from governance.models import Agent, System
from sandbox.testing import crm_control
from tests.factories import execute, propose

User = get_user_model()


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=out)
    except SystemExit as exc:
        return int(exc.code), out.getvalue()
    except CommandError as exc:
        return 2, out.getvalue() + str(exc)
    return 0, out.getvalue()


# --- Kill switch ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db
def test_the_agent_switch_refuses_the_next_call_holds_pending_work_and_releases_it_when_off(crm_demo, agent_client):
    agent = Agent.objects.get(slug="collections-agent")
    pending = propose(agent, "update_credit_limit", {"credit_limit": "5000.00"})
    assert pending.status == ProposalStatus.PENDING_APPROVAL
    client = agent_client()
    owner = User.objects.get(username="owner")

    result = kill_switch_on(target=SwitchTarget(agent=agent), reason="runaway loop", user=owner, channel="admin")

    assert result.changed and result.proposals == 1
    pending.refresh_from_db()
    assert pending.status == ProposalStatus.ON_HOLD and pending.held_from == ProposalStatus.PENDING_APPROVAL
    response = client.get("/api/v1/systems/crm/accounts/4471")
    assert response.status_code == 403 and response.json()["code"] == "agent_disabled"
    assert "runaway loop" in response.json()["detail"]
    with pytest.raises(InvalidTransition):
        proposal_approve(proposal_id=pending.pk, user=User.objects.get(username="approver"), channel="admin")
    on = AuditEvent.objects.get(verb="kill_switch_on")
    assert on.agent == agent and on.person == owner and "runaway loop" in on.summary
    assert AuditEvent.objects.filter(verb="held", proposal_id=pending.pk).exists()
    # A second "on" changes nothing and writes nothing.
    again = kill_switch_on(target=SwitchTarget(agent=agent), reason="again", user=owner, channel="admin")
    assert not again.changed and AuditEvent.objects.filter(verb="kill_switch_on").count() == 1

    off = kill_switch_off(target=SwitchTarget(agent=agent), reason="loop fixed", user=owner, channel="admin")

    assert off.proposals == 1
    pending.refresh_from_db()
    assert pending.status == ProposalStatus.PENDING_APPROVAL and pending.held_from == ""
    assert client.get("/api/v1/systems/crm/accounts/4471").status_code == 200
    assert "loop fixed" in AuditEvent.objects.get(verb="kill_switch_off").summary


@pytest.mark.slow
@pytest.mark.django_db
def test_a_system_freeze_holds_that_systems_approved_work_and_refuses_writes_but_not_reads(crm_demo, agent_client):
    agent = Agent.objects.get(slug="collections-agent")
    queued = propose(agent, "update_credit_limit", {"credit_limit": "2100.00"})  # auto: approved, not yet executed
    assert queued.status == ProposalStatus.APPROVED
    crm = System.objects.get(slug="crm")
    client = agent_client()

    kill_switch_on(target=SwitchTarget(system=crm), reason="CRM migration", channel="command")

    queued.refresh_from_db()
    assert queued.status == ProposalStatus.ON_HOLD and queued.held_from == ProposalStatus.APPROVED
    assert proposal_execute(proposal_id=queued.pk).status == "suppressed"  # a delivered task does not start
    refused = client.post(
        "/api/v1/proposals",
        {"system": "crm", "action": "add_note", "record_id": "4471", "payload": {"text": "x"}},
        content_type="application/json",
    )
    assert refused.status_code == 503 and refused.json()["code"] == "system_frozen"
    assert client.get("/api/v1/systems/crm/accounts/4471").status_code == 200

    kill_switch_off(target=SwitchTarget(system=crm), reason="done", channel="command")
    queued.refresh_from_db()
    assert queued.status == ProposalStatus.APPROVED
    assert proposal_execute(proposal_id=queued.pk).status == "executed"


@pytest.mark.django_db
def test_the_switch_wants_a_reason_and_a_person_allowed_to_pull_it(demo, f):
    agent = Agent.objects.get(slug="collections-agent")
    with pytest.raises(ValidationError, match="reason"):
        kill_switch_on(target=SwitchTarget(agent=agent), reason="  ", channel="command")
    with pytest.raises(PermissionDenied):
        kill_switch_on(target=SwitchTarget(agent=agent), reason="x", user=f.UserFactory(), channel="admin")
    with pytest.raises(PermissionDenied):  # the global stop is not an agent owner's to pull
        kill_switch_on(target=SwitchTarget(), reason="x", user=User.objects.get(username="owner"), channel="admin")
    with pytest.raises(ValidationError):
        SwitchTarget(agent=agent, system=System.objects.get(slug="crm"))
    assert not AuditEvent.objects.filter(verb="kill_switch_on").exists()


@pytest.mark.django_db
def test_the_kill_switch_command_stops_and_resumes_everything(demo):
    code, out = run("kill_switch", "on", "--reason", "incident 42")
    assert code == 0 and "every agent" in out
    from governance.models import GlobalSwitch

    assert GlobalSwitch.is_engaged() == (True, "incident 42")
    code, out = run("kill_switch", "off", "--reason", "incident closed")
    assert code == 0 and GlobalSwitch.is_engaged()[0] is False
    assert list(AuditEvent.objects.filter(verb__startswith="kill_switch").values_list("verb", flat=True)) == [
        "kill_switch_off",
        "kill_switch_on",
    ]


# --- Reversal ---------------------------------------------------------------------------------------------------


@pytest.fixture
def fast_rounds(monkeypatch):
    from datetime import timedelta

    monkeypatch.setattr(reversal_module, "ROUND_BACKOFF", timedelta(seconds=0.05))


def writes(crm_demo) -> dict[str, Proposal]:
    """The collections agent's writes: two raises and a note on 4471, a statement, a status change, a raise on 4472."""
    agent = Agent.objects.get(slug="collections-agent")
    return {
        "raise": execute(propose(agent, "update_credit_limit", {"credit_limit": "2300.00"})),
        "note": execute(propose(agent, "add_note", {"text": "Promised to pay on Friday."})),
        "statement": execute(propose(agent, "send_statement", {"period": "2026-10"})),
        "status": execute(propose(agent, "set_status", {"status": "on_hold"})),
        "raise_again": execute(propose(agent, "update_credit_limit", {"credit_limit": "2450.00"})),
        "other": execute(propose(agent, "update_credit_limit", {"credit_limit": "1200.00"}, record="4472")),
    }


def account(stack, record: str, *, staging: bool = False) -> dict:
    import httpx

    url = stack.crm_staging_url if staging else stack.crm_url
    response = httpx.get(f"{url}/accounts/{record}", headers={"Authorization": f"Bearer {stack.crm_token}"}, timeout=5)
    return response.json()


@pytest.mark.slow
@pytest.mark.django_db
def test_a_plan_follows_each_record_back_through_its_writes_newest_first(crm_demo, stack_processes):
    done = writes(crm_demo)
    crm_control(stack_processes.crm_url, "/_control/set", {"account": "4472", "fields": {"credit_limit": "1700.00"}})
    agent = Agent.objects.get(slug="collections-agent")

    reversal = reversal_plan(agent=agent, hours=24, channel="command")

    steps = {step.proposal_id: step for step in reversal.steps.all()}
    assert [step.proposal_id for step in reversal.steps.order_by("position")] == [
        done[name].pk for name in ("other", "raise_again", "status", "statement", "note", "raise")
    ]
    assert steps[done["other"].pk].kind == ReversalStep.Kind.BLOCKED
    assert "credit_limit is 1700.00 (this write set 1200.00)" in steps[done["other"].pk].explanation
    assert steps[done["raise_again"].pk].kind == ReversalStep.Kind.REVERSIBLE
    assert steps[done["raise"].pk].kind == ReversalStep.Kind.REVERSIBLE  # 2300 is what the newer raise found
    assert steps[done["statement"].pk].kind == ReversalStep.Kind.NOT_REVERSIBLE
    assert steps[done["statement"].pk].explanation == "A statement e-mail that has been sent cannot be unsent."
    assert reversal.moving  # the agent was not stopped
    assert account(stack_processes, "4471")["credit_limit"] == "2450.00"  # planning changes nothing


@pytest.mark.slow
@pytest.mark.django_db
def test_a_reversal_restores_the_values_once_and_a_second_run_changes_nothing(crm_demo, stack_processes, fast_rounds):
    done = writes(crm_demo)
    before_notes = [note["id"] for note in account(stack_processes, "4471")["notes"]][:-1]
    agent = Agent.objects.get(slug="collections-agent")
    kill_switch_on(target=SwitchTarget(agent=agent), reason="reverse the day", channel="command")

    reversal = reversal_run_here(reversal_id=reversal_plan(agent=agent, hours=24, channel="command").pk)

    record = account(stack_processes, "4471")
    assert record["credit_limit"] == "2000.00" and record["status"] == "active"
    assert [note["id"] for note in record["notes"]] == before_notes
    assert account(stack_processes, "4472")["credit_limit"] == "1500.00"
    assert reversal.status == Reversal.Status.DONE and not reversal.moving
    report = reversal_report(reversal)
    assert len(report["done"]) == 5 and [s.proposal_id for s in report["not_reversible"]] == [done["statement"].pk]
    assert Proposal.objects.filter(status=ProposalStatus.REVERSED).count() == 5
    assert AuditEvent.objects.filter(verb="reversed").count() == 5
    writes_after_first = crm_control(stack_processes.crm_url, "/_stats")["writes_total"]

    again = reversal_plan(agent=agent, hours=24, channel="command")
    kinds = list(again.steps.values_list("kind", flat=True))
    assert kinds.count(ReversalStep.Kind.ALREADY_REVERSED) == 5 and ReversalStep.Kind.REVERSIBLE not in kinds
    assert "A reversal is not itself reversed" in again.steps.filter(kind="already_reversed").first().explanation
    reversal_run_here(reversal_id=again.pk)
    assert crm_control(stack_processes.crm_url, "/_stats")["writes_total"] == writes_after_first
    with pytest.raises(ReversalRefused, match="not planned"):
        reversal_start(reversal_id=reversal.pk, channel="command")


@pytest.mark.slow
@pytest.mark.django_db
def test_a_failing_compensation_is_reported_and_does_not_stop_the_rest(crm_demo, stack_processes, fast_rounds):
    agent = Agent.objects.get(slug="collections-agent")
    broken = execute(propose(agent, "update_credit_limit", {"credit_limit": "2300.00"}))
    fine = execute(propose(agent, "update_credit_limit", {"credit_limit": "1200.00"}, record="4472"))
    # The compensation of the first is damaged: the CRM refuses it (422), a permanent failure.
    Proposal.objects.filter(pk=broken.pk).update(
        compensation={**broken.compensation, "body": {"credit_limit": "not a number"}}
    )

    reversal = reversal_run_here(reversal_id=reversal_plan(agent=agent, hours=24, channel="command").pk)

    assert reversal.status == Reversal.Status.INCOMPLETE
    report = reversal_report(reversal)
    assert [step.proposal_id for step in report["failed"]] == [broken.pk]
    assert [step.proposal_id for step in report["done"]] == [fine.pk]
    assert account(stack_processes, "4472")["credit_limit"] == "1500.00"
    assert account(stack_processes, "4471")["credit_limit"] == "2300.00"
    assert AuditEvent.objects.filter(verb="reversal_step_failed", proposal_id=broken.pk).exists()
    finished = AuditEvent.objects.get(verb="reversal_finished")
    assert finished.outcome == "incomplete" and "1 failed" in finished.summary


@pytest.mark.slow
@pytest.mark.django_db
def test_a_change_made_between_the_check_and_the_compensation_is_held_not_overwritten(
    crm_demo, stack_processes, fast_rounds
):
    """The reversal reads 4471 (still as the agent left it), and while its PATCH is on the way a person changes the
    account: the compensation names the version it read, the CRM refuses the stale one, and the step is held."""
    agent = Agent.objects.get(slug="collections-agent")
    raised = execute(propose(agent, "update_credit_limit", {"credit_limit": "2300.00"}))
    reversal = reversal_plan(agent=agent, hours=24, channel="command")
    crm = stack_processes.crm_url
    arrived = crm_control(crm, "/_stats")["requests_total"]
    crm_control(crm, "/_control/mode", {"mode": "slow", "delay": 1.0})  # each request waits 1 s before it is served

    def person_edits_while_the_patch_waits() -> None:
        deadline = time.monotonic() + 20
        while crm_control(crm, "/_stats")["requests_total"] < arrived + 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # the reversal's read, then its PATCH, have arrived
        crm_control(crm, "/_control/set", {"account": "4471", "fields": {"credit_limit": "2600.00"}})

    person = threading.Thread(target=person_edits_while_the_patch_waits)
    person.start()
    try:
        done = reversal_run_here(reversal_id=reversal.pk)
    finally:
        person.join()
        crm_control(crm, "/_control/mode", {"mode": "normal"})

    step = done.steps.get()
    assert step.status == ReversalStep.Status.HELD, (step.status, step.last_error)
    assert "not overwritten" in step.last_error and "409" in step.last_error, step.last_error
    assert "version_conflict" in step.last_error
    assert account(stack_processes, "4471")["credit_limit"] == "2600.00"  # the person's value stands
    assert Proposal.objects.get(pk=raised.pk).status == ProposalStatus.EXECUTED
    assert not AuditEvent.objects.filter(verb="reversed").exists()


@pytest.mark.slow
@pytest.mark.django_db
def test_the_crm_down_during_a_reversal_is_retried_with_backoff(crm_demo, stack_processes, fast_rounds):
    agent = Agent.objects.get(slug="collections-agent")
    execute(propose(agent, "update_credit_limit", {"credit_limit": "2300.00"}))
    execute(propose(agent, "add_note", {"text": "n"}, record="4472"))
    reversal = reversal_plan(agent=agent, hours=24, channel="command")
    crm_control(stack_processes.crm_url, "/_control/mode", {"mode": "error", "status": 503, "count": 3})

    reversal = reversal_run_here(reversal_id=reversal.pk, timeout=30)

    assert reversal.status == Reversal.Status.DONE and reversal.rounds >= 2
    assert account(stack_processes, "4471")["credit_limit"] == "2000.00"
    assert max(reversal.steps.values_list("attempts", flat=True)) >= 2


# --- Drill ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db
def test_a_rollback_drill_writes_to_staging_reverses_and_records_a_pass(crm_demo, stack_processes):
    staging_before = account(stack_processes, "4471", staging=True)

    code, out = run("rollback_drill", "--system", "crm")  # a production system: its staging twin is drilled

    assert code == 0, out
    drill = Drill.objects.get()
    assert drill.passed and drill.system.slug == "crm-staging" and drill.duration.total_seconds() > 0
    assert {entry.get("action") for entry in drill.report} >= {"update_credit_limit", "add_note", "set_status"}
    assert all(entry.get("reversed") for entry in drill.report if "proposal" in entry)
    staging_after = account(stack_processes, "4471", staging=True)
    assert {k: v for k, v in staging_after.items() if k not in ("version", "updated_at")} == {
        k: v for k, v in staging_before.items() if k not in ("version", "updated_at")
    }
    assert account(stack_processes, "4471")["credit_limit"] == "2000.00"  # production untouched
    assert AuditEvent.objects.get(verb="drill").outcome == "passed"
    assert "passed" in out


@pytest.mark.slow
@pytest.mark.django_db
def test_a_drill_against_a_broken_staging_system_is_recorded_as_failed(crm_demo, stack_processes):
    crm_control(stack_processes.crm_staging_url, "/_control/mode", {"mode": "error", "status": 500})
    try:
        code, _ = run("rollback_drill", "--system", "crm-staging")
    finally:
        crm_control(stack_processes.crm_staging_url, "/_control/mode", {"mode": "normal"})
    assert code == 1
    drill = Drill.objects.get()
    assert not drill.passed and drill.failure
    assert AuditEvent.objects.get(verb="drill").outcome == "failed"


@pytest.mark.django_db
def test_a_drill_refuses_a_production_system_without_a_staging_twin(demo):
    System.objects.filter(slug="crm").update(staging_twin=None)
    code, out = run("rollback_drill", "--system", "crm")
    assert code == 2 and "without a staging twin" in out
    assert not Drill.objects.exists()


# --- End to end on the running stack ------------------------------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_stop_the_agent_then_reverse_its_day_on_the_workers(live):
    """Five writes over HTTP, the kill switch by command, then `reverse_writes --execute` run by the stack's worker."""
    agent = live.agent()

    def propose_http(action: str, payload: dict, record: str = "4471") -> str:
        body = {"system": "crm", "action": action, "record_id": record, "payload": payload, "reason": "e2e"}
        response = agent.post("/api/v1/proposals", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    ids = [
        propose_http("update_credit_limit", {"credit_limit": "2300.00"}),
        propose_http("add_note", {"text": "Promised to pay on Friday."}),
        propose_http("send_statement", {"period": "2026-10"}),
        propose_http("update_credit_limit", {"credit_limit": "1800.00"}, record="4472"),
    ]
    status_id = propose_http("set_status", {"status": "on_hold"})
    proposal_approve(proposal_id=status_id, user=User.objects.get(username="approver"), channel="admin")
    # A statement cannot be unsent: it never executes on its own, a person approves it.
    proposal_approve(proposal_id=ids[2], user=User.objects.get(username="approver"), channel="admin")
    for proposal_id in [*ids, status_id]:
        live.wait_for(proposal_id, "executed")
    live.crm_control("/_control/set", {"account": "4472", "fields": {"credit_limit": "1750.00"}})  # a person

    code, out = run("kill_switch", "on", "--agent", "collections-agent", "--reason", "reverse its day")
    assert code == 0, out
    refused = agent.get("/api/v1/systems/crm/accounts/4471")
    assert refused.status_code == 403 and refused.json()["code"] == "agent_disabled"

    code, out = run("reverse_writes", "--agent", "collections-agent", "--hours", "24", "--execute", "--timeout", "60")

    assert code == 1, out  # one write is held for a person
    record = live.crm_account("4471")
    assert record["credit_limit"] == "2000.00" and record["status"] == "active"
    assert "Promised to pay on Friday." not in [note["text"] for note in record["notes"]]
    assert live.crm_account("4472")["credit_limit"] == "1750.00"  # the person's value stands
    assert "NOT REVERSIBLE: A statement e-mail that has been sent cannot be unsent." in out
    assert "held for a person" in out and "credit_limit is 1750.00 (this write set 1800.00)" in out
    reversal = Reversal.objects.get()
    assert reversal.status == Reversal.Status.INCOMPLETE and reversal.rounds >= 1
    assert Proposal.objects.get(pk=ids[3]).status == ProposalStatus.EXECUTED


@pytest.mark.django_db
def test_a_drill_asked_for_by_someone_who_may_not_pull_the_systems_switch_is_refused_by_the_service(demo):
    """The admin's drill button checked who may; the service (and so the task and every other door) does too."""
    staging = System.objects.get(slug="crm-staging")
    with pytest.raises(PermissionDenied):
        drill_request(system=staging, user=User.objects.get(username="approver"), channel="admin")
    with pytest.raises(PermissionDenied):
        rollback_drill(system=staging, user=User.objects.get(username="auditor"), channel="admin")
    assert not Drill.objects.exists()
