"""One record's story in plain language: its audit events in the order they happened, a proposal's steps that
follow one another told as one readable line."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from uuid import UUID

from django.db.models import Q
from django.utils import timezone

from audit.changes import configuration_text
from audit.choices import Verb
from audit.models import AuditEvent
from core.moments import clock
from core.numbers import finite_decimal

# Events read for one page of a record's timeline; the next page continues after the last one (keyset paging).
TIMELINE_PAGE = 500
# Steps of a proposal that add nothing a reader needs once the outcome is known.
_QUIET = {Verb.EXECUTING}
# A proposal that reached one of these is over: no "not executed yet" at the end of its story.
_ENDS = (Verb.EXECUTED, Verb.REJECTED, Verb.FAILED, Verb.EXPIRED, Verb.CANCELLED)


@dataclass
class TimelineLine:
    """One line of a timeline: when it happened, what it says, and the events it was built from.

    A proposal's steps that came one after another make one line; when something else happened between two of its
    steps, the proposal goes on in a later line (`continued`), linked to the same proposal.
    """

    at: datetime
    text: str
    proposal_id: UUID | None = None
    event_ids: list[int] = field(default_factory=list)
    outcome: str = "ok"
    continued: bool = False

    @property
    def proposal_ref(self) -> str:
        """The proposal's short name on the page ("proposal 1a2b3c4d"), the same on each of its lines."""
        return f"proposal {str(self.proposal_id)[:8]}" if self.proposal_id else ""


def _humanise(name: str) -> str:
    return name.replace("_", " ").strip()


def _show(value: Any, currency: str) -> str:
    # Amounts read as amounts ("2,000.00"): with a known currency, or written as decimals ("2000.00").
    decimal_text = isinstance(value, str) and "." in value and value.replace(".", "", 1).lstrip("-").isdigit()
    number = finite_decimal(value) if currency or decimal_text else None
    if number is not None:
        return f"{number:,.2f}"
    if value is None or value == "":
        return "(empty)"
    return str(value)


def _person(event: AuditEvent) -> str:
    person = event.person if event.person_id else None
    if person is not None:
        return person.get_full_name() or person.get_username()
    return event.actor


_VERBS = {
    # past, to-form
    "raised": ("raised", "raise"),
    "lowered": ("lowered", "lower"),
    "changed": ("changed", "change"),
    "set": ("set", "set"),
}


def change_phrase(before: Mapping[str, Any], after: Mapping[str, Any], *, thing: str, currency: str, past: bool) -> str:
    """'raised the credit limit of account 4471 from 2,000.00 to 5,000.00 USD', one phrase per field that changes
    (`past=False`: 'raise the …'). Public: a proposal's one sentence (approvals/wording.py) says it the same way.
    With `currency=""` amounts keep their decimals ("2,000.00") and carry no unit."""
    phrases = []
    for position, (name, new) in enumerate(after.items()):
        old = before.get(name)
        label = _humanise(name) + (f" of {thing}" if position == 0 else "")
        unit = f" {currency}" if currency and finite_decimal(new) is not None else ""
        old_number, new_number = finite_decimal(old), finite_decimal(new)
        if old_number is not None and new_number is not None and old_number != new_number:
            kind = "raised" if new_number > old_number else "lowered"
        elif name in before and old != new:
            kind = "changed"
        else:
            kind = "set"
        verb = _VERBS[kind][0 if past else 1]
        if kind == "set":
            phrases.append(f"{verb} the {label} to {_show(new, currency)}{unit}")
        else:
            phrases.append(f"{verb} the {label} from {_show(old, currency)} to {_show(new, currency)}{unit}")
    return _join(phrases)


def _join(phrases: list[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _proposal_line(
    run: list[AuditEvent], *, whole: list[AuditEvent], labels: Mapping[str, str], currency: str
) -> TimelineLine:
    """The line of `run`, steps of one proposal that came one after another; `whole` is every event of the proposal
    on the page, oldest first, which says whether the run opens the proposal's story and whether it goes on."""
    here = {id(event) for event in run}
    opens, goes_on = id(whole[0]) in here, id(whole[-1]) not in here
    on = timezone.localtime(run[0].occurred_at).date()
    opening = _opening(run, whole, labels=labels, currency=currency, continued=not opens)
    steps: list[str] = []
    outcome = "ok"
    for event in run:
        if event.verb == Verb.PROPOSED or event.verb in _QUIET or event.verb == Verb.READ:
            continue  # a read is a person looking at the record to decide: kept in the event list, not the story
        text, ends = _step(event, on=on)
        steps.append(text)
        outcome = ends or outcome
    if goes_on:
        steps.append("continued below")
    elif not any(event.verb in _ENDS for event in whole):
        steps.append("not executed yet")
        if outcome == "ok":
            outcome = "pending"
    text = f"{opening} — {', '.join(steps)}" if steps else opening
    return TimelineLine(
        at=run[0].occurred_at,
        text=text,
        proposal_id=run[0].proposal_id,
        event_ids=[event.pk for event in run],
        outcome=outcome,
        continued=not opens,
    )


def _opening(
    run: list[AuditEvent],
    whole: list[AuditEvent],
    *,
    labels: Mapping[str, str],
    currency: str,
    continued: bool,
) -> str:
    """Who did (or proposed) what to which record: the head of a proposal's line.

    The line that opens the proposal gives the reason; a later line of the same proposal names it again without it.
    What changed is the system's own before/after when this line holds the execution, else the proposal's snapshot
    and payload.
    """
    first = run[0]
    proposed = next((event for event in whole if event.verb == Verb.PROPOSED), None)
    executed = next((event for event in run if event.verb == Verb.EXECUTED), None)
    resource = next((event.resource for event in whole if event.resource), "")
    thing = f"{labels.get(resource) or (resource[:-1] if resource.endswith('s') else resource) or 'record'}"
    thing = f"{thing} {first.record_id}".strip()
    who = proposed.actor if proposed else first.actor
    action = _humanise((proposed.input or {}).get("action", "")) if proposed else ""
    payload = (proposed.input or {}).get("payload") if proposed else None
    proposes = f"{who}'s proposal to" if continued else f"{who} proposed to"
    if executed and executed.state_after and executed.state_before:
        opening = f"{who} " + change_phrase(
            executed.state_before, executed.state_after, thing=thing, currency=currency, past=True
        )
    elif executed is None and isinstance(payload, dict) and payload and proposed and proposed.state_before:
        opening = f"{proposes} " + change_phrase(
            proposed.state_before, payload, thing=thing, currency=currency, past=False
        )
    elif proposed is not None:
        details = ""
        if isinstance(payload, dict) and payload:
            details = " (" + ", ".join(f"{_humanise(k)}: {_show(v, currency)}" for k, v in payload.items()) + ")"
        if executed:
            opening = f"{who} ran {action or 'an action'} on {thing}{details}"
        elif continued:
            opening = f"{who}'s proposal of {action or 'an action'} on {thing}{details}"
        else:
            opening = f"{who} proposed {action or 'an action'} on {thing}{details}"
    else:
        opening = first.summary.rstrip(".")
    if not continued and proposed and (proposed.input or {}).get("reason"):
        opening += f" (reason: “{proposed.input['reason']}”)"
    return opening


def _step(event: AuditEvent, *, on: date) -> tuple[str, str]:
    """One step of a proposal's line in words, and the outcome it ends the proposal in ("" when it does not).

    Its time is the clock time when it happened on the line's day (`on`), else the whole moment."""
    at = clock(event.occurred_at, on=on)
    comment = (event.input or {}).get("comment") or (event.input or {}).get("reason") or ""
    quoted = f" (“{comment}”)" if comment else ""
    said = f": “{comment}”" if comment else ""
    steps: dict[str, tuple[str, str]] = {
        Verb.AUTO_APPROVED: (f"auto-approved by rule at {at}", ""),
        Verb.APPROVED: (f"approved by {_person(event)} at {at}{quoted}", ""),
        Verb.REJECTED: (f"rejected by {_person(event)} at {at}{said}", "rejected"),
        Verb.EXECUTED: (f"executed {at}", ""),
        Verb.FAILED: (f"failed at {at}: {event.summary}", "failed"),
        Verb.REVIEWED: (f"second review by {_person(event)} at {at}", ""),
        Verb.FLAGGED: (f"flagged by {_person(event)} at {at}{said}", "flagged"),
        Verb.ESCALATED: (f"escalated at {at} (SLA passed undecided)", ""),
        Verb.EXPIRED: (f"expired undecided at {at}", "expired"),
        Verb.CANCELLED: (f"withdrawn by {event.actor} at {at}", "cancelled"),
        Verb.REVERSED: (f"reversed at {at}" + (f" by {_person(event)}" if event.person_id else ""), "reversed"),
        Verb.HELD: (f"put on hold by the kill switch at {at}", ""),
        Verb.RELEASED: (f"released from hold at {at}", ""),
        Verb.REVERSAL_HELD: (f"its reversal was left for a person at {at} (changed since)", ""),
        Verb.REVERSAL_STEP_FAILED: (f"its reversal failed at {at}: {event.summary}", ""),
        Verb.DENIED: (f"{event.actor} was refused at {at} ({event.summary.rstrip('.')})", ""),
    }
    return steps.get(event.verb, (f"{_humanise(event.verb)} at {at}", ""))


def _configured(event: AuditEvent) -> str:
    """Who changed what, before → after, why: from the event's states, never cut short like its summary."""
    given = event.input or {}
    return configuration_text(
        who=_person(event),
        action=str(given.get("action") or "changed"),
        what=str(given.get("object") or event.resource or "the configuration"),
        name=str(given.get("name") or ""),
        before=event.state_before,
        after=event.state_after,
        reason=str(given.get("reason") or ""),
    )


def _single_line(event: AuditEvent) -> TimelineLine:
    if event.verb == Verb.CONFIGURED:
        return TimelineLine(at=event.occurred_at, text=_configured(event), event_ids=[event.pk], outcome=event.outcome)
    fields = (event.input or {}).get("fields") if event.verb == Verb.READ else None
    text = event.summary.rstrip(".")
    if fields and isinstance(fields, list) and "field" not in text:
        text += f" (fields returned: {', '.join(str(name) for name in fields)})"
    return TimelineLine(at=event.occurred_at, text=text, event_ids=[event.pk], outcome=event.outcome)


def _quiet(event: AuditEvent) -> bool:
    """A step of a proposal that never makes or splits a line of its own: `executing`, a person reading the record."""
    return event.proposal_id is not None and (event.verb in _QUIET or event.verb == Verb.READ)


def timeline_lines(
    events: Iterable[AuditEvent],
    *,
    labels: Mapping[str, str] | None = None,
    currencies: Mapping[UUID, str] | None = None,
) -> list[TimelineLine]:
    """Turn a scope's events into lines in the order they happened, oldest first.

    An event outside any proposal is a line. A proposal's steps that follow one another with nothing else between
    them make one line ("raised … — auto-approved by rule at 14:02:05, executed 14:02:06"); when something else
    happened in between (another proposal, a read), the proposal's later steps make a later line that names it again,
    so a raise executed after another one is never shown above it. Quiet steps (`executing`, a person's read) join
    the line of their proposal's step before them and never split a line.

    `labels` names resources for people ("accounts" → "account"); `currencies` gives each proposal's currency so
    amounts read "2,000.00 to 5,000.00 USD". A proposal that began before the period shown starts at its first event
    present.
    """
    labels = labels or {}
    currencies = currencies or {}
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.pk or 0))
    whole: dict[UUID, list[AuditEvent]] = {}
    for event in ordered:
        if event.proposal_id is not None:
            whole.setdefault(event.proposal_id, []).append(event)
    # A proposal whose only events here are quiet ones is still told (from its first event's summary).
    telling = {pid for pid, its in whole.items() if not all(_quiet(event) for event in its)}
    runs: list[list[AuditEvent]] = []
    last_run: dict[UUID, list[AuditEvent]] = {}
    for event in ordered:
        pid = event.proposal_id
        if pid is not None and pid in telling and _quiet(event) and pid in last_run:
            last_run[pid].append(event)  # joins the line of its proposal's last step, wherever that line is
            continue
        if pid is not None and runs and runs[-1][0].proposal_id == pid:
            runs[-1].append(event)
        else:
            runs.append([event])
        if pid is not None:
            last_run[pid] = runs[-1]
    quiet_first: dict[UUID, list[AuditEvent]] = {}  # quiet steps before any other step: told with the first line
    lines: list[TimelineLine] = []
    for run in runs:
        pid = run[0].proposal_id
        if pid is None:
            lines.append(_single_line(run[0]))
            continue
        if pid in telling and all(_quiet(event) for event in run):
            quiet_first.setdefault(pid, []).extend(run)
            continue
        own = [event for event in whole[pid] if pid not in telling or not _quiet(event)]
        line = _proposal_line(run, whole=own, labels=labels, currency=currencies.get(pid, ""))
        if quiet_first.get(pid):
            line.event_ids = sorted([*line.event_ids, *(event.pk for event in quiet_first.pop(pid))])
        lines.append(line)
    return lines


# --- Paging a record's events ---------------------------------------------------------------------------------


def parse_day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


@dataclass
class TimelinePage:
    events: list[AuditEvent]
    next_after: int | None  # the cursor of the next page, when there is one
    continued: bool  # this page follows an earlier one
    bad_cursor: bool = False


def timeline_page(system, record_id: str, *, day: date | None, after: str | None) -> TimelinePage:
    """One page of a record's events: `scope_page` over the record's events."""
    return scope_page(AuditEvent.objects.for_record(system, record_id), day=day, after=after)


def scope_page(base: Any, *, day: date | None, after: str | None) -> TimelinePage:
    """One page of the events of a scope (a record's; an agent's; a system's own), oldest first, each proposal told
    whole on the page where it begins.

    A page reads up to `TIMELINE_PAGE` events after the cursor (an event id of this scope: its time and id are the
    keyset), served by the scope's (…, occurred_at) index at any depth: (system, record_id, occurred_at) for a record
    and for a system's own events (record id empty), (agent, occurred_at) for an agent. Events of a proposal that
    began on an earlier page are left out (that page told it whole); events of a proposal that begins on this page
    but continues past its end are fetched with it, so its line ends with its outcome.
    """
    scope = base
    if day is not None:
        scope = scope.on(day)
    cursor: tuple[datetime, int] | None = None
    bad_cursor = False
    if after:
        try:
            found = scope.only("id", "occurred_at").get(pk=int(after))
            cursor = (found.occurred_at, found.pk)
        except (ValueError, OverflowError, AuditEvent.DoesNotExist):
            bad_cursor = True  # a cursor of another record (or none at all): start from the beginning
    continued = cursor is not None
    events: list[AuditEvent] = []
    told: set = set()
    for _ in range(20):  # a page made only of proposals told earlier is skipped, not shown empty
        rows = list(
            _after(scope, cursor).select_related("person", "system").order_by("occurred_at", "id")[:TIMELINE_PAGE]
        )
        ids = {event.proposal_id for event in rows if event.proposal_id} - told
        if cursor is not None and ids:
            told |= set(_before(scope.filter(proposal_id__in=ids), cursor).values_list("proposal_id", flat=True))
        events = [event for event in rows if event.proposal_id not in told]
        if rows:
            cursor = (rows[-1].occurred_at, rows[-1].pk)
        if events or len(rows) < TIMELINE_PAGE:
            break
    proposal_ids = {event.proposal_id for event in events if event.proposal_id}
    if proposal_ids:
        # A proposal that begins here but is decided or executed later (past this page or this day) is told whole.
        seen = {event.pk for event in events}
        more = (
            base.filter(proposal_id__in=proposal_ids)
            .exclude(pk__in=seen)
            .select_related("person", "system")[:TIMELINE_PAGE]
        )
        events.extend(more)
    # Is there anything after this page that a later page would show? Not the rest of proposals told here or before.
    has_more = (
        cursor is not None
        and _after(scope, cursor).filter(Q(proposal_id__isnull=True) | ~Q(proposal_id__in=proposal_ids | told)).exists()
    )
    return TimelinePage(
        events=events,
        next_after=cursor[1] if has_more and cursor else None,
        continued=continued,
        bad_cursor=bad_cursor,
    )


def _after(queryset, cursor: tuple[datetime, int] | None):
    """Events after the keyset (time, id); the time range is what the (…, occurred_at) index serves."""
    if cursor is None:
        return queryset
    at, pk = cursor
    return queryset.filter(occurred_at__gte=at).filter(Q(occurred_at__gt=at) | Q(pk__gt=pk))


def _before(queryset, cursor: tuple[datetime, int]):
    at, pk = cursor
    return queryset.filter(occurred_at__lte=at).filter(Q(occurred_at__lt=at) | Q(pk__lte=pk))
