"""What an MCP tool call answers: a result with structured content and the same in plain words, a refusal as a
tool error with the contract's code, and one of the agent's proposals described as it stands now.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from agents import shapes
from approvals.choices import AWAITING_DECISION, EXECUTABLE, DecisionMode, ProposalStatus
from approvals.models import Proposal
from core.errors import GatehouseError, NotFound
from core.request_context import current_request_id
from governance.models import Agent


@dataclass(frozen=True)
class Wait:
    """wait_for_decision's proposal, still undecided when the call began, and how long the caller will wait."""

    proposal_id: uuid.UUID
    seconds: float


@dataclass
class ToolResult:
    """A tool's answer: structured content, the same in plain words, and whether it is a refusal."""

    structured: dict[str, Any]
    message: str
    is_error: bool = False
    settle: uuid.UUID | None = None  # an auto-approved proposal: worth waiting a moment to report it executed
    wait: Wait | None = None  # wait_for_decision: poll until a person decides or the time is up

    @property
    def undecided(self) -> bool:
        """A proposal still waiting for a person, or approved and not yet executed: worth waiting for."""
        return not self.is_error and self.structured.get("outcome") in ("waiting_for_approval", "approved")


def refusal(exc: GatehouseError) -> ToolResult:
    """A refusal as a tool error: the contract's code and message, the argument errors, and when to retry."""
    structured: dict[str, Any] = {
        "outcome": "refused",
        "code": exc.code,
        "status": exc.status,
        "message": exc.detail,
        "request_id": current_request_id(),
    }
    text = f"Refused ({exc.code}): {exc.detail}"
    if exc.errors:
        structured["errors"] = exc.errors
        text += "".join(f"\n- {path}: {message}" for path, message in exc.errors.items())
    retry_after = exc.headers.get("Retry-After")
    if retry_after and retry_after.isdigit():
        structured["retry_after"] = int(retry_after)
        text += f"\nRetry after {retry_after} s."
    return ToolResult(structured, text, is_error=True)


# --- Proposals in plain words -------------------------------------------------------------------------------------


def proposal_result(agent: Agent, proposal_id: uuid.UUID, grants: shapes.ReadGrants | None = None) -> ToolResult:
    """One of the agent's own proposals as it stands now; another agent's looks exactly like a missing one.

    The message is made from the answer's body only, so it shows the impact exactly when the body does."""
    proposal = Proposal.objects.visible_to(agent).for_api().filter(pk=proposal_id).first()
    if proposal is None:
        raise NotFound("No such proposal.")
    body = shapes.proposal_body(proposal, grants)
    outcome, message, waiting_for = _describe(proposal, body)
    structured = {"outcome": outcome, "message": message, "proposal": body}
    if waiting_for:
        structured["waiting_for"] = {key: value for key, value in waiting_for.items() if value is not None}
    return ToolResult(structured, message)


def _describe(proposal: Proposal, body: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None]:
    decision = body["decision"]
    what = f"{body['action']} on {body['system']} record {body['record_id']}"
    impact = body["impact"]
    if impact["amount"] is not None:
        what += f" (impact {impact['amount']} {impact['currency']})"
    status = proposal.status
    track = f" Proposal {body['id']}."
    if status in AWAITING_DECISION:
        who = decision["approver"] or (
            f"someone in the {decision['approver_group']} group" if decision["approver_group"] else "a person"
        )
        review = decision["review_group"]
        waiting_for = {
            "approver": decision["approver"],
            "approver_group": decision["approver_group"],
            "due_at": decision["sla_due_at"],
            "second_review_group": review,
            "expires_at": decision["expires_at"],
        }
        decided_by = proposal.decided_by if proposal.decided_by_id else None
        if decided_by is not None:  # dual, review before execution: the approver has said yes
            message = f"Approved by {decided_by.get_username()}; waiting for the second review by the {review} group"
        else:
            due = f", due by {decision['sla_due_at']}" if decision["sla_due_at"] else ""
            message = f"Waiting for approval by {who}{due}"
            if review:
                message += f", then a second review by the {review} group"
        if status == ProposalStatus.ESCALATED:
            message += " (escalated: the time to decide has passed)"
        elif status == ProposalStatus.STALE:
            message += " again (the record changed after an earlier decision, so nothing was written)"
        expires = f" Undecided, it expires at {decision['expires_at']}." if decision["expires_at"] else ""
        return (
            "waiting_for_approval",
            f"{message}: {what}. Why: {decision['reason']}. Nothing is written until then.{expires}{track}",
            waiting_for,
        )
    if status == ProposalStatus.EXECUTED:
        return "executed", f"Executed: {what}, at {body['executed_at']}. Why: {decision['reason']}.{track}", None
    if status in EXECUTABLE:
        by = "automatically by rule" if proposal.mode == DecisionMode.AUTO else "by a person"
        state = "executing now" if status == ProposalStatus.EXECUTING else "queued for execution"
        return (
            "approved",
            f"Approved {by}, {state}: {what}. Why: {decision['reason']}. Call get_proposal to see it executed.{track}",
            None,
        )
    messages = {
        ProposalStatus.MANUAL_TASK: ("manual_task", "Approved; the system is propose-only, so a person carries out"),
        ProposalStatus.REJECTED: ("rejected", "Rejected"),
        ProposalStatus.CANCELLED: ("cancelled", "Cancelled (withdrawn)"),
        ProposalStatus.EXPIRED: ("expired", "Expired undecided"),
        ProposalStatus.FAILED: ("failed", "Failed"),
        ProposalStatus.REVERSED: ("reversed", "Executed, then reversed"),
        ProposalStatus.ON_HOLD: ("on_hold", "On hold (a kill switch stopped it; an operator decides)"),
    }
    outcome, opening = messages[ProposalStatus(status)]
    why = body.get("rejection_reason") or body.get("failure_reason")
    return outcome, f"{opening}: {what}." + (f" Reason: {why}." if why else "") + track, None
