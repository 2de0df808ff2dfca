"""Approving an MCP tool's new definition (tool pinning: connectors/mcp/pinning.py noticed the change and paused the
action). Every door — the action's approve page in the admin, the `approve_mcp_tool` command — calls
`action_tool_approve`."""

from __future__ import annotations

import logging

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.services import audit_record
from core.schema import closed_schema
from core.tasks import queue_task
from governance.models import ActionType

logger = logging.getLogger(__name__)

RESUME_TASK = "approvals.resume_paused_executions"  # approvals/tasks.py: held proposals go ahead once nothing holds


def may_approve_tool(user: User | None, action: ActionType) -> bool:
    """Who accepts what a downstream tool now says and takes: the system's business owner, who answers for what the
    agents do there, or a superuser. Not an integrator: they choose which server a connector talks to, and approving
    its new definition would let them change, alone, what agents may send (the action's payload schema is the
    owner's term). Never an agent (no door of theirs calls this). None: the command line."""
    if user is None:
        return True
    return user.is_active and (action.system.owner_id == user.pk or user.is_superuser)


@transaction.atomic
def action_tool_approve(
    *, action_id: int, user: User | None, channel: Channel | str, seen_digest: str, reason: str = ""
) -> ActionType:
    """Accept the pending definition of the action's tool: it becomes the pinned one, the payload schema follows its
    input schema (closed, as the importer makes it), and the action resumes; held proposals go ahead with the resume
    job (queued now). `seen_digest`: the digest of the definition the person was shown, so a definition that changed
    again meanwhile is refused rather than approved unseen. A tool the server dropped cannot be approved: the action
    stays paused until the tool is back (or the action is deleted). The threshold rules and their sign-offs are
    untouched: they are about amounts, not about the tool."""
    action = ActionType.objects.select_for_update().select_related("system", "resource").get(pk=action_id)
    if not may_approve_tool(user, action):
        raise PermissionDenied(
            f"Only the owner of {action.system} or someone who configures its connector approves its tools."
        )
    pending = action.tool_pending or {}
    if not pending:
        raise ValidationError(f"{action} has no changed tool definition awaiting approval.")
    definition, digest = pending.get("definition"), pending.get("digest", "")
    if definition is None:
        raise ValidationError(
            f"The MCP server no longer lists {action.tool_name}: there is no definition to approve. The action stays "
            "paused until the tool is back (the next check notices it), or delete the action."
        )
    if not seen_digest or seen_digest != digest:
        raise ValidationError("The tool's definition changed again since the page was shown: look at it again.")
    before = {"digest": action.tool_digest, "payload_schema": action.payload_schema}
    action.payload_schema = closed_schema(definition.get("inputSchema"))
    action.pin_tool(definition=definition, digest=digest, by=user, at=timezone.now())
    action.full_clean()
    action._change_reason = "origin=tool-approved"
    action.save(update_fields=["payload_schema", *ActionType.PIN_FIELDS])
    who = user.get_username() if user else "an operator (command line)"
    reason = reason.strip()
    audit_record(
        verb=Verb.TOOL_APPROVED,
        actor=user,
        channel=channel,
        system=action.system,
        resource=action.resource.name,
        state_before=before,
        state_after={"digest": digest, "payload_schema": action.payload_schema},
        input={
            "action": action.name,
            "tool": action.tool_name,
            "changes": pending.get("changes", []),
            "reason": reason,
        },
        outcome="resumed",
        summary=f"{who} approved the new definition of the MCP tool {action.tool_name}: {action} resumes."
        + (f" Reason: “{reason}”." if reason else ""),
    )
    transaction.on_commit(_resume_held)
    return action


def _resume_held() -> None:
    """Held proposals of the action go ahead now rather than at the resume job's next beat; a broker that does not
    answer only delays them until then."""
    try:
        queue_task(RESUME_TASK)
    except Exception:  # the beat runs the job anyway
        logger.warning("could not queue %s; the beat runs it within a minute", RESUME_TASK, exc_info=True)
