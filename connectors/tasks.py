"""Celery tasks of the connectors app: thin wrappers around the services. Names are stable across deploys."""

from __future__ import annotations

from celery import shared_task

from audit.choices import Channel
from connectors.legacy_batch.services import batch_poll, batch_systems_due
from connectors.mcp.pinning import tools_check_all
from connectors.services import credentials_tell_rotation_due
from governance.models import System


@shared_task(name="connectors.tell_rotation_due", ignore_result=True)
def tell_rotation_due() -> int:
    """Daily: tell owners whose credential is due for rotation within a week, or overdue (once a day at most)."""
    return credentials_tell_rotation_due()


@shared_task(name="connectors.poll_batch_systems", ignore_result=True)
def poll_batch_systems() -> int:
    """Beat, every 10 s: queue a poll of each batch system whose own interval (`every`) has passed."""
    due = batch_systems_due()
    for system_id in due:
        poll_batch_system.delay(system_id)
    return len(due)


@shared_task(name="connectors.poll_batch_system", ignore_result=True)
def poll_batch_system(system_id: int) -> str:
    """Poll one batch system if it is still due; a second delivery finds it claimed or already polled and returns."""
    system = System.objects.filter(pk=system_id).first()
    if system is None:
        return "gone"
    return batch_poll(system=system, channel=Channel.TASK, only_if_due=True).summary()


@shared_task(name="connectors.check_mcp_tools", ignore_result=True)
def check_mcp_tools() -> list[str]:
    """Beat, every GATEHOUSE_MCP_TOOL_CHECK_INTERVAL: compare each MCP system's live tools with the pinned ones;
    a changed or missing tool pauses its action and tells the owner (connectors/mcp/pinning.py)."""
    return [report.summary() for report in tools_check_all(channel=Channel.TASK)]
