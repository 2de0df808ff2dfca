"""What a Slack message about a proposal says, in Block Kit: the facts of the decision page and Approve / Reject
buttons while it waits for a person, the outcome once it does not.

Rendered from the proposal as it is now, every time (post or update), so an update that runs twice, or late, shows
the same thing. Text an agent wrote (its reason, a payload's values) is escaped as Slack's docs ask (&, <, >), so it
can never become a link or a mention, and cut to Slack's limits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from approvals.choices import ProposalStatus
from approvals.models import Proposal
from approvals.wording import EMPTY, amount_text, field_label, field_text, proposal_sentence
from audit.choices import Verb
from audit.models import AuditEvent
from core.mail import admin_link, inert

APPROVE = "gatehouse_approve"  # the buttons' action_id, and the modal's callback_id
REJECT = "gatehouse_reject"
REJECT_MODAL = "gatehouse_reject_reason"
REASON_BLOCK = "reason"  # the modal's input: block_id and action_id
FIELD_CHARS = 1900  # Slack: a section field holds 2,000 characters
TEXT_CHARS = 2900  # a section's text 3,000


def escape(text: str, limit: int = FIELD_CHARS) -> str:
    """`text` as plain words in mrkdwn: Slack reads only &, < and > as control characters (its formatting docs), and
    links a bare web address by itself, which is made inert as in the approver's mail."""
    text = inert(text)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clock(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%H:%M UTC") if moment else ""


def _day_clock(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else EMPTY


def person_name(user: Any) -> str:
    return (user.get_full_name() or user.get_username()) if user is not None else "someone"


def _changes(proposal: Proposal) -> str:
    """Each field now → proposed, as the decision page's table says it ("credit limit: 2,000.00 → 5,000.00")."""
    action, snapshot = proposal.action_type, proposal.record_snapshot or {}
    lines = []
    for name, value in (proposal.payload or {}).items():
        now = field_text(action, name, snapshot[name]) if name in snapshot else None
        proposed = field_text(action, name, value)
        lines.append(
            f"{field_label(name)}: {now} → {proposed}" if now is not None else f"{field_label(name)}: {proposed}"
        )
    return "\n".join(lines) or EMPTY


def facts(proposal: Proposal) -> dict[str, str]:
    """The decision page's facts, in its words: record, now → proposed, impact, rule and band, reason, SLA."""
    terms = proposal.decision or {}
    amount = proposal.impact_amount
    rule = " · ".join(part for part in (terms.get("rule"), terms.get("band")) if part) or str(terms.get("reason", ""))
    due = _day_clock(proposal.sla_due_at)
    if proposal.expires_at:
        due += f" (expires {_day_clock(proposal.expires_at)})"
    return {
        "Record": f"{proposal.system.name} · {proposal.action_type.resource.label} {proposal.record_id}",
        "Now → proposed": _changes(proposal),
        "Impact": "unknown" if amount is None else f"{amount_text(amount)} {proposal.impact_currency}",
        "Rule and band": f"{rule} ({proposal.get_mode_display().lower()})" if rule else proposal.get_mode_display(),
        "Decide by": due,
        "The agent's reason": proposal.reason or "(none given)",
    }


def outcome(proposal: Proposal) -> str:
    """What became of it, in one line ("Approved by Dana Approver at 14:05 UTC"); "" while it simply waits."""
    status, who, when = proposal.status, person_name(proposal.decided_by), _clock(proposal.decided_at)
    if status in (ProposalStatus.PENDING_APPROVAL, ProposalStatus.ESCALATED, ProposalStatus.STALE):
        if proposal.decided_by_id:
            return f"Approved by {who} at {when}; it waits for the second review ({proposal.review_group})."
        if status == ProposalStatus.ESCALATED:
            return "Past its SLA: escalated. It is never approved automatically."
        if status == ProposalStatus.STALE:
            return "The record changed after the decision, so nothing was written: decide again on the new figures."
        return ""
    if status == ProposalStatus.REJECTED:
        return f"Rejected by {who} at {when}: {proposal.decision_comment}"
    if status == ProposalStatus.CANCELLED:
        return "Withdrawn by the agent before anyone decided."
    if status == ProposalStatus.EXPIRED:
        return f"Expired undecided ({_day_clock(proposal.expires_at)})."
    if status == ProposalStatus.ON_HOLD:
        return f"On hold: {proposal.hold_reason or 'a kill switch is on'}."
    approved = (
        f"Approved by {who} at {when}"
        if proposal.decided_by_id
        else f"Approved by rule at {_clock(proposal.decided_at)}"
    )
    after: dict[str, str] = {
        ProposalStatus.EXECUTED: f"; written to {proposal.system.name} at {_clock(proposal.executed_at)}.",
        ProposalStatus.FAILED: f"; the write failed: {proposal.failure_reason}",
        ProposalStatus.MANUAL_TASK: f"; a manual task in {proposal.system.name} (propose-only).",
        ProposalStatus.REVERSED: f"; written, then reversed at {_clock(proposal.reversed_at)}.",
    }
    return approved + after.get(status, ".")


def last_refusal(proposal: Proposal) -> str:
    """While it still waits: the last refused attempt to decide it, from any door, as the trail says it."""
    event = (
        AuditEvent.objects.filter(proposal_id=proposal.pk, verb=Verb.DENIED)
        .only("summary", "occurred_at")
        .order_by("-id")
        .first()
    )
    return f"Refused at {_clock(event.occurred_at)}: {event.summary}" if event else ""


def waits_for_a_decision(proposal: Proposal) -> bool:
    return proposal.awaiting_decision and not proposal.decided_by_id


def message(proposal: Proposal) -> tuple[str, list[dict[str, Any]]]:
    """(the notification's plain text, the blocks) for the proposal as it is now."""
    sentence = proposal_sentence(proposal)
    said = facts(proposal)
    reason = said.pop("The agent's reason")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{escape(sentence, TEXT_CHARS)}*"}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{escape(text)}"} for name, text in said.items()],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*The agent's reason*\n{escape(reason, TEXT_CHARS)}"}},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Proposed by {escape(proposal.agent.slug)} at {_day_clock(proposal.created_at)} · "
                    f"<{admin_link(proposal)}|Open the decision page>",
                }
            ],
        },
    ]
    now = outcome(proposal)
    waiting = waits_for_a_decision(proposal)
    refused = last_refusal(proposal) if waiting else ""
    if now or refused:
        lines = "\n".join(escape(line, 1400) for line in (now, refused) if line)
        blocks.append({"type": "section", "block_id": "outcome", "text": {"type": "mrkdwn", "text": lines}})
    if waiting:
        blocks.append(
            {
                "type": "actions",
                "block_id": "decision",
                "elements": [
                    _button("Approve", APPROVE, proposal, style="primary"),
                    _button("Reject…", REJECT, proposal, style="danger"),
                ],
            }
        )
    text = f"{now} {sentence}" if now else f"Awaiting your decision: {sentence}"
    return escape(text, 3000), blocks  # the notification's text: the sentence holds values the agent chose


def _button(label: str, action_id: str, proposal: Proposal, *, style: str) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": str(proposal.pk),
        "style": style,
    }


def reject_modal(proposal: Proposal) -> dict[str, Any]:
    """The modal a Reject click opens: the proposal's sentence and a reason, which the agent will see."""
    return {
        "type": "modal",
        "callback_id": REJECT_MODAL,
        "private_metadata": str(proposal.pk),
        "title": {"type": "plain_text", "text": "Reject the proposal"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{escape(proposal_sentence(proposal))}*"}},
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Why? The agent sees this reason."},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_BLOCK,
                    "multiline": True,
                    "max_length": 1000,
                },
            },
        ],
    }
