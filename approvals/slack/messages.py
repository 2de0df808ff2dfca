"""Posting and updating the Slack messages about a proposal, and who a Slack user is in Gatehouse.

Posting: one message per target (the configured channel, or each person who may decide, by direct message), each a
SlackMessage row. The row is locked while its message is posted and keeps Slack's channel and ts once it is, so a
retry after an outage, or the task delivered twice, never posts it twice. The lock is on that row only, never on the
proposal: a decision never waits for Slack.

Who clicked: Slack says which of its users it was (in a request signed with our signing secret); users.info gives
that user's e-mail address and whether Slack has confirmed it, and the one active Gatehouse person with that address
is who decides. Anything less (no address, not confirmed, a bot, a deactivated Slack user, nobody or two people in
Gatehouse with it) is a refusal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from approvals.models import Proposal, SlackMessage
from approvals.slack.blocks import message, waits_for_a_decision
from approvals.slack.client import SlackRefused, SlackUnavailable, slack_call
from approvals.slack.later import UPDATE_TASK, queue_slack_task
from governance.sign_in import roles_out_of_date

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

SHOWN_WITH = ("system", "action_type__resource", "agent", "decided_by", "review_group")


def _proposal(proposal_id: str) -> Proposal | None:
    return Proposal.objects.select_related(*SHOWN_WITH).filter(pk=proposal_id).first()


def targets(addresses: list[str]) -> list[str]:
    """Where the message goes: the configured channel, or each person's direct message (by e-mail address)."""
    if settings.GATEHOUSE_SLACK_CHANNEL:
        return [f"channel:{settings.GATEHOUSE_SLACK_CHANNEL}"]
    return [f"email:{address.strip().lower()}" for address in addresses if address and address.strip()]


def slack_messages_post(*, proposal_id: str, addresses: list[str]) -> int:
    """Post the proposal's message to every target that does not have it yet; the number posted now.

    Raises SlackUnavailable when Slack could not take one of them (the others are posted and kept): the task tries
    again later, and finds those already posted. A target Slack refuses for good (no such person in Slack) is kept
    with Slack's error code and not tried again.
    """
    proposal = _proposal(proposal_id)
    if proposal is None or not waits_for_a_decision(proposal):
        return 0  # decided before Slack heard of it: nothing to ask
    posted, unavailable = 0, None
    for target in targets(addresses):
        try:
            posted += _post(proposal, target)
        except SlackUnavailable as exc:
            unavailable = exc
    # Decided while the message was on its way: the decision's update found no message to update, so update now.
    fresh = _proposal(proposal_id)
    if posted and fresh is not None and not waits_for_a_decision(fresh):
        queue_slack_task(UPDATE_TASK, [str(proposal_id)])
    if unavailable is not None:
        raise unavailable
    return posted


def _post(proposal: Proposal, target: str) -> int:
    error: SlackUnavailable | None = None
    with transaction.atomic():
        made, _ = SlackMessage.objects.get_or_create(proposal=proposal, target=target)
        # Locked while it is posted: a second delivery of the task skips it, and finds it posted once this commits.
        row = SlackMessage.objects.select_for_update(skip_locked=True).filter(pk=made.pk).first()
        if row is None or row.ts or row.gave_up:
            return 0
        row.attempts += 1
        try:
            channel = _conversation(target)
            text, blocks = message(proposal)
            answer = slack_call("chat.postMessage", channel=channel, text=text, blocks=blocks)
        except SlackUnavailable as exc:
            row.last_error, error = exc.code, exc
        except SlackRefused as exc:
            logger.warning("slack: %s refused the message for %s: %s", target, proposal.pk, exc.code)
            row.last_error, row.gave_up = exc.code, True
        else:
            row.channel, row.ts = str(answer.get("channel", channel)), str(answer.get("ts", ""))
            row.posted_at, row.last_error = timezone.now(), ""
        row.save()
    if error is not None:
        raise error
    return 1 if row.ts else 0


def _conversation(target: str) -> str:
    """The Slack conversation a target's message goes to: the channel, or the direct message with that person."""
    kind, _, value = target.partition(":")
    if kind == "channel":
        return value
    user = slack_call("users.lookupByEmail", email=value).get("user") or {}
    opened = slack_call("conversations.open", users=str(user.get("id", "")))
    return str((opened.get("channel") or {}).get("id", ""))


def slack_messages_update(*, proposal_id: str) -> int:
    """Show the proposal as it is now in every message posted about it; the number updated.

    The rows stay locked while Slack is called, so two updates in a row reach Slack in order and the later state is
    the one shown. Raises SlackUnavailable (after updating what it could) so the task tries again.
    """
    unavailable = None
    updated = 0
    with transaction.atomic():
        rows = list(SlackMessage.objects.select_for_update().filter(proposal_id=proposal_id).exclude(ts=""))
        proposal = _proposal(proposal_id) if rows else None
        if proposal is None:
            return 0
        text, blocks = message(proposal)
        for row in rows:
            try:
                slack_call("chat.update", channel=row.channel, ts=row.ts, text=text, blocks=blocks)
            except SlackUnavailable as exc:
                row.last_error, unavailable = exc.code, exc
            except SlackRefused as exc:  # deleted in Slack, say: nothing to update, nothing to retry
                logger.warning("slack: could not update the message for %s: %s", proposal_id, exc.code)
                row.last_error = exc.code
            else:
                row.shown_at, row.last_error = timezone.now(), ""
                updated += 1
            row.save(update_fields=["shown_at", "last_error"])
    if unavailable is not None:
        raise unavailable
    return updated


def slack_ephemeral(*, channel: str, slack_user: str, text: str) -> None:
    """A message only the person who clicked sees (a refusal, and why). Best effort: the refusal is in the trail."""
    try:
        slack_call("chat.postEphemeral", channel=channel, user=slack_user, text=text)
    except (SlackUnavailable, SlackRefused) as exc:
        logger.warning("slack: could not tell %s why they were refused: %s", slack_user, exc.code)


def slack_open_modal(*, trigger_id: str, view: dict[str, Any]) -> str:
    """Open a modal for the person who clicked; "" when it opened, else Slack's reason (a trigger expires in 3 s)."""
    try:
        slack_call("views.open", trigger_id=trigger_id, view=view)
    except (SlackUnavailable, SlackRefused) as exc:
        return exc.code
    return ""


@dataclass(frozen=True)
class SlackPerson:
    """Who a Slack user is in Gatehouse: `user`, or why not (`refusal`, said to them; `outcome`, for the trail)."""

    user: User | None
    refusal: str = ""
    outcome: str = ""
    email: str = ""


def slack_person(slack_user_id: str, *, team: str = "") -> SlackPerson:
    """The Gatehouse person behind Slack user `slack_user_id`, by the e-mail address Slack has confirmed for them.

    `is_email_confirmed` is a field of Slack's user object (users.info); Slack's reference does not promise it in
    every answer, so anything but true is read as not confirmed: fail closed. With GATEHOUSE_SLACK_TEAM_ID set, a
    click from another workspace (a shared channel's guest, say) is nobody here, whatever e-mail address it shows.
    A person whose roles come from single sign-on must have signed in lately (governance.sign_in.roles_out_of_date):
    a Slack click is no sign-in, and would otherwise honour roles the provider took away.
    """
    expected_team = settings.GATEHOUSE_SLACK_TEAM_ID
    if expected_team and team != expected_team:
        return SlackPerson(None, "this Slack workspace is not the one Gatehouse works with", "foreign_workspace")
    try:
        found = slack_call("users.info", user=slack_user_id).get("user") or {}
    except SlackUnavailable:
        return SlackPerson(None, "Slack could not say who you are just now; try again in a minute", "slack_unavailable")
    except SlackRefused as exc:
        return SlackPerson(None, f"Slack does not know this user ({exc.code})", "unmapped_slack_user")
    email = str((found.get("profile") or {}).get("email") or "").strip()
    if found.get("deleted") or found.get("is_bot") or found.get("is_app_user"):
        return SlackPerson(None, "this Slack account is deactivated or a bot", "unmapped_slack_user", email)
    if not email:
        return SlackPerson(None, "Slack does not share an e-mail address for you", "unmapped_slack_user")
    if found.get("is_email_confirmed") is not True:
        return SlackPerson(None, f"Slack has not confirmed your e-mail address {email}", "unconfirmed_email", email)
    people = list(get_user_model().objects.filter(email__iexact=email, is_active=True)[:2])
    if len(people) != 1:
        why = "nobody" if not people else "more than one person"
        return SlackPerson(None, f"{why} in Gatehouse has the e-mail address {email}", "unmapped_slack_user", email)
    stale = roles_out_of_date(people[0])
    if stale:
        return SlackPerson(None, stale, "roles_out_of_date", email)
    return SlackPerson(people[0], email=email)
