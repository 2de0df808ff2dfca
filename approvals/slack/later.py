"""The two moments Slack hears of a proposal, both after the commit (a Slack or broker outage never undoes or
repeats a decision): it starts waiting for people (post, from approvals/notify.py), and something happened to it
(update, from approvals/transitions.record_event, whichever door acted).

Importing nothing but the model and core, so the state machine can call it without a circle.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterable

from django.db import transaction

from approvals.models import Proposal, SlackMessage
from approvals.slack import slack_enabled
from audit.choices import Verb
from core.tasks import queue_task

logger = logging.getLogger(__name__)

POST_TASK = "approvals.slack_post"  # the tasks' stable names (approvals/tasks.py)
UPDATE_TASK = "approvals.slack_update"

# The events a message shows: a decision, its refusal, and what became of the proposal after.
SHOWN = frozenset(
    {
        Verb.APPROVED,
        Verb.REJECTED,
        Verb.DENIED,
        Verb.CANCELLED,
        Verb.ESCALATED,
        Verb.EXPIRED,
        Verb.EXECUTED,
        Verb.FAILED,
        Verb.REVIEWED,
        Verb.FLAGGED,
        Verb.REVERSED,
        Verb.HELD,
        Verb.RELEASED,
        Verb.STALE,
        Verb.REFRESHED,  # decided again on new figures: the message shows them
        Verb.REASSIGNED,
    }
)


def slack_post_later(proposal: Proposal, addresses: Iterable[str | None]) -> None:
    """Queue the message to whoever decides (`addresses`: their e-mail; ignored when posting to a channel). Called
    after the commit; a broker that does not answer is logged, and the e-mail and the decision page still tell."""
    if not slack_enabled():
        return
    people = sorted({address for address in addresses if address})
    queue_slack_task(POST_TASK, [str(proposal.pk), people])


def slack_update_later(proposal: Proposal, verb: str) -> None:
    """After the caller's commit, when the proposal has Slack messages: update them to show what happened."""
    if not slack_enabled() or verb not in SHOWN:
        return
    transaction.on_commit(functools.partial(_update_if_posted, proposal.pk))


def _update_if_posted(proposal_id: uuid.UUID) -> None:
    if SlackMessage.objects.filter(proposal_id=proposal_id).exclude(ts="").exists():
        queue_slack_task(UPDATE_TASK, [str(proposal_id)])


def queue_slack_task(task: str, args: list[object]) -> None:
    """Publish a Slack task now; a broker that does not answer is logged, not raised."""
    try:
        queue_task(task, args=args)
    except Exception as exc:  # any broker failure: what it reports has committed, and other notices still go
        logger.warning("slack: could not queue %s for %s: %s", task, args[0], type(exc).__name__)
