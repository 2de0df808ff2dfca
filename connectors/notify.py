"""E-mail from the connectors: a credential rotation whose check failed or that comes due (never the secret), an MCP
tool that changed under a pinned action."""

from __future__ import annotations

from django.urls import reverse

from connectors.models import AgentCredential, Credential
from core.mail import admin_link, inert, send_notice, site_link
from governance.models import ActionType


def _named(credential: Credential | AgentCredential) -> tuple[str, str]:
    """(what the subject calls the credential, the rotate_credential arguments that rotate it)."""
    system, agent = credential.system, credential.holder
    if agent is None:
        return f"Credential of {system.slug}", system.slug
    return f"Credential of {agent.slug} at {system.slug}", f"{system.slug} --agent {agent.slug}"


def notify_rotation_failed(credential: Credential | AgentCredential, *, reason: str, stored: bool) -> None:
    """The owner (and, when Gatehouse now holds a secret the system refuses, on-call) hears of a failed check."""
    system = credential.system
    named, _ = _named(credential)
    if stored:
        subject = f"{named} rotated, but the system refuses it"
        body = (
            f"The new secret for {system} is stored, and the health check with it failed:\n  {reason}\n\n"
            "The previous secret did not pass either, so Gatehouse keeps the new one. Calls to the system will fail "
            "until it accepts the secret: check it, and rotate again with the right one."
        )
        recipients = [system.owner.email, system.oncall_contact]
    else:
        subject = f"{named} not rotated: the system refused the new secret"
        body = (
            f"The health check of {system} with the new secret failed:\n  {reason}\n\n"
            "The system still accepts the current secret, so nothing was changed. Rotate again with the right one."
        )
        recipients = [system.owner.email]
    send_notice(subject, f"{body}\n\n{admin_link(credential)}", recipients)


def notify_rotation_due(credential: Credential | AgentCredential, *, overdue: bool) -> None:
    system = credential.system
    named, arguments = _named(credential)
    due = f"{credential.rotation_due_at:%Y-%m-%d %H:%M} UTC"
    if overdue:
        subject = f"{named} is overdue for rotation"
        body = (
            f"The {credential} was due for rotation on {due}. Until it is rotated, the "
            "readiness checklist fails for every agent that writes to the system with it."
        )
    else:
        subject = f"{named} is due for rotation"
        body = f"The {credential} is due for rotation on {due}."
    body += (
        f"\n\nRotate it with `manage.py rotate_credential {arguments}` (the new secret on stdin) or in the admin:"
        f"\n{admin_link(credential)}"
    )
    send_notice(subject, body, [system.owner.email])


def notify_tool_changed(action: ActionType, changes: list[str]) -> None:
    """The system's owner (and its on-call contact: writes through the action stop) hear that an MCP tool changed
    under a pinned action: what changed, and where to approve it. The server's words are made inert (a description
    is the server's to write, and a link in it would seem to come from Gatehouse)."""
    system = action.system
    gone = action.tool_pending.get("definition") is None
    what = "is gone from" if gone else "changed on"
    body = (
        f"The tool {action.tool_name} behind the action {action.name} {what} the MCP server of {system}, since "
        "it was last approved. Gatehouse paused the action: agents' proposals on it are refused (action_paused), and "
        "approved ones wait.\n\nWhat changed:\n"
        + "\n".join(f"  {inert(line)}" for line in changes)
        + "\n\nIf the change is expected, approve the new definition here (the action then resumes; its payload "
        "schema follows the tool's new input schema):\n"
        + site_link(reverse("admin:governance_actiontype_approve_tool", args=[action.pk]))
        + "\n\nIf it is not, leave it paused and ask whoever runs the server."
    )
    send_notice(
        f"MCP tool {what} the server: {system}.{action.name} paused", body, [system.owner.email, system.oncall_contact]
    )
