"""Celery tasks for the audit trail: thin wrappers with names that stay stable across deploys."""

from __future__ import annotations

from celery import shared_task

from audit.integrity import FULL_WALK_TIME_LIMIT, verify_and_checkpoint


@shared_task(
    name="audit.verify_and_checkpoint",
    ignore_result=True,
    # A full walk at millions of events outlasts the default limits (and the broker's visibility timeout, which
    # would deliver an unacknowledged run to a second worker): acknowledged on receipt, with its own time limits. A
    # run lost with its worker leaves its row unfinished ("running") and is simply redone by a later beat.
    acks_late=False,
    soft_time_limit=FULL_WALK_TIME_LIMIT.total_seconds(),
    time_limit=FULL_WALK_TIME_LIMIT.total_seconds() + 60,
)
def verify_and_checkpoint_task() -> bool:
    """Beat job: walk the chain, record the result (AuditVerification), sign its head (AuditCheckpoint)."""
    return verify_and_checkpoint().ok
