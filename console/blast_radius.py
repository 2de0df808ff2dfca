"""A credential's blast radius: who and what depends on one system's vaulted credential, should it leak.

Served under the admin (`admin:connectors_credential_blast_radius`, gatehouse.admin_site): read-only, for an owner or
operator deciding whether to rotate now.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse

from approvals.choices import AWAITING_DECISION, EXECUTABLE, ProposalStatus
from approvals.models import Proposal
from audit.links import audit_trail_url
from connectors.models import Credential
from governance.models import ScopeGrant, System


@dataclass
class BlastRadius:
    """Who depends on one system's credential: agents with current grants, and the proposals that would use it."""

    system: object
    credential: Credential | None
    agents: list[dict] = field(default_factory=list)  # {"agent", "reads": [grant], "writes": [grant]}
    proposals: list = field(default_factory=list)
    proposal_count: int = 0


PROPOSALS_SHOWN = 50


def blast_radius(system) -> BlastRadius:
    credential = Credential.objects.filter(system=system).first()
    result = BlastRadius(system=system, credential=credential)
    by_agent: dict[int, dict] = {}
    grants = (
        ScopeGrant.objects.filter(system=system)
        .current()
        .select_related("agent", "resource")
        .order_by("agent__slug", "resource__name", "access")
    )
    for grant in grants:
        entry = by_agent.setdefault(grant.agent_id, {"agent": grant.agent, "reads": [], "writes": []})
        entry["reads" if grant.access == "read" else "writes"].append(grant)
    result.agents = list(by_agent.values())
    # Everything that will still call the system: awaiting a decision, approved or executing, or held by a switch.
    open_statuses = [*AWAITING_DECISION, *EXECUTABLE, ProposalStatus.ON_HOLD]
    proposals = Proposal.objects.filter(system=system, status__in=open_statuses)
    result.proposal_count = proposals.count()
    result.proposals = list(proposals.select_related("agent", "action_type").order_by("-created_at")[:PROPOSALS_SHOWN])
    return result


def blast_radius_view(request: HttpRequest, system: str) -> TemplateResponse:
    """Read-only: which agents, grants and open proposals depend on this system's credential."""
    if not request.user.has_perm("connectors.view_credential"):
        raise PermissionDenied
    found = get_object_or_404(System.objects.visible_to(request.user), slug=system)
    radius = blast_radius(found)
    credential = radius.credential
    context = {
        **admin.site.each_context(request),
        "opts": Credential._meta,
        "title": f"Blast radius of the credential of {found}",
        "radius": radius,
        "more_proposals": max(0, radius.proposal_count - len(radius.proposals)),
        "due_soon": credential is not None and credential.rotation_state() == "due soon",
        "can_rotate": credential is not None
        and request.user.has_perm("connectors.change_credential")
        and Credential.objects.editable_by(request.user).filter(pk=credential.pk).exists(),
        "audit_trail_url": audit_trail_url(system__id__exact=found.pk)
        if request.user.has_perm("audit.view_auditevent")
        else "",
    }
    return TemplateResponse(request, "admin/connectors/credential/blast_radius.html", context)
