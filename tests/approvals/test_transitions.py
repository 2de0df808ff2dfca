"""The state machine in approvals/transitions.py: a move it does not list is refused, and leaves nothing behind."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from approvals.choices import TERMINAL_STATUSES, ProposalStatus
from approvals.decisions import proposal_reject
from approvals.models import Proposal
from approvals.transitions import MOVES, InvalidTransition, locked, move
from audit.models import AuditEvent
from tests.factories import propose_credit_note


def test_every_status_is_either_a_terminal_one_or_has_its_moves_listed():
    listed = set(MOVES) | {status for targets in MOVES.values() for status in targets}
    assert listed == set(ProposalStatus.values)
    assert set(MOVES).isdisjoint(TERMINAL_STATUSES - {ProposalStatus.EXECUTED})  # an executed write may be reversed


@pytest.mark.django_db
def test_a_rejected_proposal_cannot_be_moved_to_executing_and_nothing_is_recorded(demo, f):
    f.billing_world()
    proposal = propose_credit_note("1200.00")
    approver = get_user_model().objects.get(username="approver")
    proposal_reject(proposal_id=proposal.pk, user=approver, channel="admin", reason="No.")
    events = AuditEvent.objects.count()
    with pytest.raises(InvalidTransition), transaction.atomic():
        move(locked(proposal.pk), ProposalStatus.EXECUTING, verb="executing", actor=None, channel="task", summary="x")
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.REJECTED
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
def test_a_hold_remembers_where_it_was_and_a_release_forgets_it(demo, f):
    f.billing_world()
    proposal = propose_credit_note("1200.00")
    with transaction.atomic():
        held = move(locked(proposal.pk), ProposalStatus.ON_HOLD, verb="held", actor=None, channel="task", summary="h")
    proposal = Proposal.objects.get(pk=proposal.pk)
    assert (proposal.status, proposal.held_from, held.verb) == (ProposalStatus.ON_HOLD, "pending_approval", "held")
    with transaction.atomic():
        move(
            locked(proposal.pk),
            ProposalStatus.PENDING_APPROVAL,
            verb="released",
            actor=None,
            channel="task",
            summary="r",
        )
    proposal = Proposal.objects.get(pk=proposal.pk)
    assert (proposal.status, proposal.held_from) == (ProposalStatus.PENDING_APPROVAL, "")
