"""Celery tasks for proposals: thin wrappers that take ids and call the services. Names are stable across deploys."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from approvals.decisions import proposals_escalate_and_expire
from approvals.drills import rollback_drill_by_id
from approvals.execution import outbox_sweep, paused_executions_resume, proposal_execute, retry_delay
from approvals.notify import notify_awaiting_by_id
from approvals.reversal_rounds import reversal_run, reversals_resume
from approvals.reversal_single import flagged_reversals_plan_missing
from approvals.services import idempotency_records_purge
from approvals.slack.client import SlackUnavailable
from approvals.slack.messages import slack_messages_post, slack_messages_update


@shared_task(name="approvals.execute_proposal", bind=True, acks_late=True, max_retries=None, ignore_result=True)
def execute_proposal(self, proposal_id: str) -> str:
    """Execute one approved proposal. A second delivery finds it claimed or done and returns."""
    try:
        outcome = proposal_execute(proposal_id=proposal_id)
    except Exception as exc:
        # Our own failure (a bug, the database gone, the soft time limit): the claim was released, so retry with
        # backoff; the proposal's attempt count still bounds how often.
        raise self.retry(exc=exc, countdown=within_visibility(retry_delay(self.request.retries + 1, None))) from exc
    if outcome.status == "retry":
        raise self.retry(countdown=within_visibility(outcome.retry_in))
    return outcome.status


def within_visibility(countdown: float | None) -> float | None:
    """A retry's countdown, capped below the broker's visibility timeout.

    A worker holds a message with a countdown unacknowledged until it is due; past the visibility timeout Redis hands
    it to a second worker as well. A long Retry-After from a system would do that. Capped, the retry arrives early and
    the system's rate limit (which kept that Retry-After) defers the call again without spending an attempt."""
    if countdown is None:
        return None
    return min(countdown, settings.GATEHOUSE_BROKER_VISIBILITY_TIMEOUT * 0.8)


@shared_task(name="approvals.notify_awaiting", ignore_result=True)
def notify_awaiting(proposal_id: str) -> bool:
    """Ask whoever may decide a new proposal (mail with a link of their own, Slack), off the agent's request."""
    return notify_awaiting_by_id(proposal_id)


@shared_task(name="approvals.outbox_sweep", ignore_result=True)
def sweep_outbox() -> int:
    """Publish again approved work that no worker took up (broker was down, message lost, worker died)."""
    return outbox_sweep()


@shared_task(name="approvals.purge_idempotency_keys", ignore_result=True)
def purge_idempotency_keys() -> int:
    return idempotency_records_purge()


@shared_task(name="approvals.escalate_and_expire", ignore_result=True)
def escalate_and_expire() -> tuple[int, int]:
    """Escalate proposals past their SLA, expire those past their maximum age (database clock); plan the reversal
    of a write flagged after execution if the review's own plan did not happen (approvals/reversal_single.py)."""
    flagged_reversals_plan_missing()
    return proposals_escalate_and_expire()


@shared_task(name="approvals.run_reversal", bind=True, acks_late=True, max_retries=None, ignore_result=True)
def run_reversal(self, reversal_id: int) -> bool:
    """One round of a reversal; scheduled again with backoff while steps wait to be retried."""
    outcome = reversal_run(reversal_id=reversal_id)
    if not outcome.finished:
        raise self.retry(countdown=within_visibility(outcome.retry_in))
    return True


@shared_task(name="approvals.resume_reversals", ignore_result=True)
def resume_reversals() -> int:
    return reversals_resume()


@shared_task(name="approvals.run_drill", ignore_result=True)
def run_drill(system_id: int, user_id: int | None = None) -> int:
    """A rollback drill asked for in the admin; the result is the Drill row the admin shows."""
    return rollback_drill_by_id(system_id=system_id, user_id=user_id).pk


@shared_task(name="approvals.resume_paused_executions", ignore_result=True)
def resume_paused_executions() -> int:
    """Production writes paused because a system's checklist stopped holding go ahead once it holds again."""
    return paused_executions_resume()


SLACK_MAX_RETRIES = 8  # with the execution backoff (2 s doubling, capped at 5 min): about ten minutes, then logged


@shared_task(name="approvals.slack_post", bind=True, acks_late=True, max_retries=SLACK_MAX_RETRIES, ignore_result=True)
def slack_post(self, proposal_id: str, addresses: list[str]) -> int:
    """Post a proposal's Slack message where it is not posted yet; an outage is retried with backoff, bounded, and a
    retry never posts twice (approvals/slack/messages.py)."""
    try:
        return slack_messages_post(proposal_id=proposal_id, addresses=addresses)
    except SlackUnavailable as exc:
        countdown = within_visibility(retry_delay(self.request.retries + 1, exc.retry_after))
        raise self.retry(exc=exc, countdown=countdown) from None


@shared_task(
    name="approvals.slack_update", bind=True, acks_late=True, max_retries=SLACK_MAX_RETRIES, ignore_result=True
)
def slack_update(self, proposal_id: str) -> int:
    """Show what happened to a proposal in its Slack messages; an outage is retried with backoff, bounded."""
    try:
        return slack_messages_update(proposal_id=proposal_id)
    except SlackUnavailable as exc:
        countdown = within_visibility(retry_delay(self.request.retries + 1, exc.retry_after))
        raise self.retry(exc=exc, countdown=countdown) from None
