"""The proposal page's way back for one write: the reversal a flag planned (waiting for its approver), and the
"Reverse this write" button. Both call approvals/reversal_single.py, like `reverse_writes --proposal`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponseRedirect

from approvals.choices import ProposalStatus
from approvals.deciders import may_approve_reversal, may_reverse
from approvals.models import Proposal, Reversal
from approvals.reversal import ReversalRefused
from approvals.reversal_single import NotYourReversal, proposal_reversal_approve, proposal_reverse, reversal_awaiting
from audit.choices import Channel
from core.admin import admin_user

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin
    from django.contrib.auth.models import User


def reversal_context(proposal: Proposal, user: User) -> dict[str, Any]:
    """What the page shows: this write's reversals, the one waiting for an approver, and which buttons this person
    has (the services check again on the click)."""
    waiting = reversal_awaiting(proposal)
    executed = proposal.status == ProposalStatus.EXECUTED
    return {
        "reversals": list(Reversal.objects.filter(proposal=proposal).order_by("-created_at")),
        "reversal_waiting": waiting,
        "can_approve_reversal": bool(waiting) and executed and may_approve_reversal(user, proposal) is None,
        "can_reverse": executed and waiting is None and may_reverse(user, proposal) is None,
    }


def reversal_step(
    model_admin: ModelAdmin, request: HttpRequest, proposal: Proposal, *, step: str, note: str, page: str
) -> HttpResponseRedirect:
    """The two buttons: reverse this write now (confirmed), or approve the reversal a flag planned."""
    user = admin_user(request)
    try:
        if step == "reverse":
            if request.POST.get("confirm") != "yes":
                model_admin.message_user(request, "Tick the confirmation to reverse this write.", messages.ERROR)
                return HttpResponseRedirect(page)
            reversal = proposal_reverse(proposal_id=proposal.pk, user=user, channel=Channel.ADMIN, reason=note)
        else:
            waiting = reversal_awaiting(proposal)
            if waiting is None:
                model_admin.message_user(request, "No reversal of this write waits for approval.", messages.WARNING)
                return HttpResponseRedirect(page)
            reversal = proposal_reversal_approve(reversal_id=waiting.pk, user=user, channel=Channel.ADMIN)
    except NotYourReversal as exc:
        model_admin.message_user(request, str(exc), messages.ERROR)
    except ReversalRefused as exc:
        model_admin.message_user(request, str(exc), messages.WARNING)
    else:
        model_admin.message_user(
            request,
            f"Reversal {reversal.pk} {'handed to the workers' if reversal.status == 'running' else 'planned'}.",
            messages.SUCCESS,
        )
    return HttpResponseRedirect(page)
