"""The proposal page's values, each labelled with where and when it was read.

Three kinds of value, never shown under one another's name:

- what the decision rests on: the record's fields as the proposal keeps them, read when it was proposed (or when it
  was last decided again, after the record moved), and the impact computed on them;
- what the system holds now: read as the page loads, labelled with the time of that read;
- what was written: the system's own before and after, with the time of the write.

When the record moved since the decision, the page says so in words and shows what approvals/freshness.py would do
with it (decide again on the new figures); it changes nothing itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.utils import timezone

from approvals.admin.single_reversal import reversal_context
from approvals.choices import AWAITING_DECISION, ProposalStatus
from approvals.decisions import proposal_current_record
from approvals.freshness import moved, redecide, watched_fields
from approvals.models import Proposal
from approvals.reversal import same_value
from approvals.wording import EMPTY, amount_text, field_label, field_text, proposal_sentence
from audit.choices import Verb
from audit.models import AuditEvent
from governance.choices import ImpactKind

# Where the page reads the record as it is now: before a decision (to decide on it), and after a write (to compare).
READ_TO_DECIDE = AWAITING_DECISION | {ProposalStatus.MANUAL_TASK}
READ_TO_COMPARE = frozenset({ProposalStatus.EXECUTED, ProposalStatus.REVERSED})


@dataclass(frozen=True)
class Column:
    key: str  # the cells' class: then, live, proposed, before, written
    label: str
    when: str = ""  # "read at 14:05 UTC", "2026-12-02 14:02 UTC"

    @property
    def heading(self) -> str:
        return f"{self.label}, {self.when}" if self.when else self.label


@dataclass(frozen=True)
class Row:
    field: str
    cells: list[tuple[str, str]]  # (column key, text), in the columns' order
    changes: bool
    headings: tuple[str, ...] = ()  # the columns' headings, in the same order

    @property
    def labelled(self) -> list[tuple[str, str, str]]:
        """(key, heading, text) per cell: on a phone each value is shown under its heading, not in a column."""
        return [(key, heading, text) for (key, text), heading in zip(self.cells, self.headings, strict=False)]


def _clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M %Z")


def _day_clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z")


def _decision_basis(proposal: Proposal, history: list[AuditEvent]) -> tuple[str, datetime]:
    """("when proposed", its time), or ("when decided again", the time of the last re-decision): the moment the
    record's values the decision rests on (`record_snapshot`) and its impact were read and computed."""
    again = [event for event in history if event.verb in (Verb.STALE, Verb.REFRESHED)]
    if again:
        return "when decided again", again[-1].occurred_at
    return "when proposed", proposal.created_at


def _fields(proposal: Proposal) -> list[str]:
    names = list(proposal.payload or {})
    return names + [name for name in (proposal.record_snapshot or {}) if name not in names]


def _moved_text(proposal: Proposal, changes: dict[str, list[Any]], basis: str) -> str:
    """The record moved, in words: "The record changed since the agent proposed this: the impact was computed on
    2,300.00; it is 2,600.00 now."."""
    action = proposal.action_type
    parts = []
    for name, (then, now) in changes.items():
        then_text, now_text = field_text(action, name, then), field_text(action, name, now)
        if action.impact_kind == ImpactKind.DELTA and name == action.impact_field:
            parts.append(f"the impact was computed on {then_text}; it is {now_text} now")
        else:
            parts.append(f"the {field_label(name)} was {then_text}; it is {now_text} now")
    since = "since the agent proposed this" if basis == "when proposed" else "since it was last decided"
    return f"The record changed {since}: {'; '.join(parts)}."


def _values_before_decision(
    proposal: Proposal, record: dict[str, Any] | None, *, basis: str, basis_at: datetime, live: Column | None
) -> tuple[list[Column], list[Row]]:
    """Each field as the decision has it (`basis`), as the system has it now (`live`, when read) and as proposed. An
    action that sets no field of the record (a note, an e-mail) has only its payload to show."""
    action = proposal.action_type
    snapshot, payload = proposal.record_snapshot or {}, proposal.payload or {}
    if not watched_fields(action):
        rows = [Row(name, [("proposed", field_text(action, name, value))], True) for name, value in payload.items()]
        return [Column("proposed", "Proposed")], rows
    columns = [Column("then", basis.capitalize(), _day_clock(basis_at)), *([live] if live else [])]
    columns.append(Column("proposed", "Proposed"))
    rows = []
    for name in _fields(proposal):
        cells = [("then", field_text(action, name, snapshot.get(name)) if name in snapshot else "not kept")]
        if live is not None:
            cells.append(("live", EMPTY if record is None else field_text(action, name, record.get(name))))
        proposed = field_text(action, name, payload[name]) if name in payload else "(not changed)"
        cells.append(("proposed", proposed))
        before = record.get(name) if record is not None else snapshot.get(name)
        rows.append(Row(name, cells, name in payload and not same_value(before, payload[name])))
    return columns, rows


def _values_after_write(
    proposal: Proposal, record: dict[str, Any] | None, *, live: Column | None
) -> tuple[list[Column], list[Row], str]:
    """The write's before and after, the record now, and a sentence when what it holds now is not what was written."""
    action = proposal.action_type
    before, after = proposal.state_before or {}, proposal.state_after or proposal.payload or {}
    written_at = _day_clock(proposal.executed_at) if proposal.executed_at else ""
    columns = [
        Column("before", "Before the write"),
        Column("written", "Written", written_at),
        *([live] if live else []),
    ]
    rows, differs = [], []
    for name, value in after.items():
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value  # a created note
        cells = [("before", field_text(action, name, before.get(name))), ("written", field_text(action, name, shown))]
        if live is not None:
            now = record.get(name) if record is not None else None
            cells.append(("live", EMPTY if record is None else field_text(action, name, now)))
            if record is not None and name in record and not same_value(now, value):
                differs.append(
                    f"the {field_label(name)} was written as {field_text(action, name, shown)}; "
                    f"it is {field_text(action, name, now)} now"
                )
        rows.append(Row(name, cells, not same_value(before.get(name), value)))
    said = ""
    if differs:
        reversed_ = f"This write was reversed ({_day_clock(proposal.reversed_at)}). " if proposal.reversed_at else ""
        said = f"{reversed_}What {proposal.system.name} holds now is not what was written: {'; '.join(differs)}."
    return columns, rows, said


def _read_now(proposal: Proposal, user: Any, *, written: bool) -> tuple[dict[str, Any] | None, str, Column]:
    """The record as the system has it now (the read is audited), and its column, labelled with the time of the read."""
    purpose = "to compare it with a write" if written else "to decide a proposal"
    record, unreadable = proposal_current_record(proposal=proposal, user=user, purpose=purpose)
    at = _clock(timezone.now())
    when = f"could not be read at {at}" if unreadable else f"read at {at}"
    return record, unreadable, Column("live", f"In {proposal.system.name} now", when)


def _freshness(proposal: Proposal, record: dict[str, Any] | None, basis: str) -> dict[str, Any]:
    """What the page says when the record moved since the decision, and what approvals/freshness.py would make of it
    (the impact and the decision on the record as it is now). Shown only: approving is what decides it again."""
    if not record or proposal.status not in AWAITING_DECISION:
        return {"moved_text": "", "new_impact": "", "new_reason": "", "already": ""}
    changes = moved(proposal, record)
    again = redecide(proposal, record) if changes else None
    already = []  # moved() does not count these: the write would change nothing
    for name, value in (proposal.payload or {}).items():
        then = (proposal.record_snapshot or {}).get(name)
        if name in record and same_value(record[name], value) and not same_value(then, value):
            already.append(f"{field_label(name)} {field_text(proposal.action_type, name, value)}")
    new_impact = ""
    if again is not None:
        amount = again.impact.amount
        new_impact = "unknown" if amount is None else f"{amount_text(amount)} {again.impact.currency}"
    return {
        "moved_text": _moved_text(proposal, changes, basis) if changes else "",
        "new_impact": new_impact,
        "new_reason": again.decision.reason if again else "",
        "already": ", ".join(already),
    }


def decision_context(proposal: Proposal, *, user: Any, viewer: Any) -> dict[str, Any]:
    """The proposal page's context: `user` reads the record (audited) and acts; `viewer` is the request's user, whose
    queues say whether the decision or review buttons are theirs."""
    history = list(AuditEvent.objects.filter(proposal_id=proposal.pk).select_related("person").order_by("id"))
    basis, basis_at = _decision_basis(proposal, history)
    written = proposal.executed_at is not None and proposal.status in READ_TO_COMPARE
    record, unreadable, live = None, "", None
    if proposal.status in READ_TO_DECIDE or written:
        record, unreadable, live = _read_now(proposal, user, written=written)
    live_differs = ""
    if written:
        columns, rows, live_differs = _values_after_write(proposal, record, live=live)
    else:
        columns, rows = _values_before_decision(proposal, record, basis=basis, basis_at=basis_at, live=live)
    headings = tuple(column.heading for column in columns)
    rows = [replace(row, headings=headings) for row in rows]
    amount = proposal.impact_amount
    return {
        "proposal": proposal,
        "title": proposal_sentence(proposal),
        "basis": basis,
        "basis_at": _day_clock(basis_at),
        "impact_text": "unknown" if amount is None else f"{amount_text(amount)} {proposal.impact_currency}",
        "live": live,
        "unreadable": unreadable,
        "columns": columns,
        "rows": rows,
        "written": written,
        "live_differs": live_differs,
        **_freshness(proposal, record, basis),
        "stale_said": _stale_said(proposal),
        "payload_json": json.dumps(proposal.payload, indent=2, ensure_ascii=False),
        "history": history,
        "can_decide": proposal.awaiting_decision
        and not proposal.decided_by_id
        and Proposal.objects.awaiting_decision_by(viewer).filter(pk=proposal.pk).exists(),
        "can_review": proposal.awaiting_review
        and Proposal.objects.awaiting_review_by(viewer).filter(pk=proposal.pk).exists(),
        "can_complete": proposal.status == ProposalStatus.MANUAL_TASK,
        **reversal_context(proposal, user),
    }


def _stale_said(proposal: Proposal) -> str:
    """Why it was decided again: each field the decision had rested on, before → after ("credit limit 2,000.00 →
    2,500.00")."""
    action = proposal.action_type
    return "; ".join(
        f"{field_label(name)} {field_text(action, name, then)} → {field_text(action, name, now)}"
        for name, (then, now) in (proposal.stale_changes or {}).items()
    )
