"""The approval queue and the proposal page: what awaits me, what I need to decide, and the buttons to do it."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from approvals.admin.single_reversal import reversal_context, reversal_step
from approvals.autonomy import autonomy_report
from approvals.autonomy_records import (
    DEFAULT_DAYS,
    MAX_RAISE_FACTOR,
    RAISE_MIN_DECIDED,
    TIGHTEN_MIN_DECIDED,
    TIGHTEN_REJECTION_RATE,
)
from approvals.choices import AWAITING_DECISION, DecisionMode, ProposalStatus
from approvals.decisions import (
    NotYourDecision,
    proposal_approve,
    proposal_current_record,
    proposal_manual_complete,
    proposal_reject,
    proposal_review,
)
from approvals.freshness import RecordMoved, moved, redecide
from approvals.models import Proposal
from approvals.transitions import InvalidTransition
from audit.choices import Channel
from audit.models import AuditEvent
from core.admin import admin_user
from governance.models import Agent

AUTONOMY_MAX_DAYS = 366


class QueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [
            ("mine", "Awaiting my decision"),
            ("review", "Awaiting my review"),
            ("review_overdue", "Review overdue"),
            ("all", "All proposals"),
        ]

    def choices(self, changelist):
        # No "All" entry of Django's own: the default view is the signed-in user's queue.
        for value, label in self.lookup_choices:
            yield {
                "selected": (self.value() or "mine") == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request, queryset):
        value = self.value() or "mine"
        if value == "mine":
            return queryset.awaiting_decision_by(request.user)
        if value == "review":
            return queryset.awaiting_review_by(request.user)
        if value == "review_overdue":  # everyone's: an overdue review is on-call's business too, never dropped
            return queryset.review_overdue()
        return queryset


def _money(value) -> str:
    try:
        return f"{Decimal(str(value)):,.2f}"
    except (InvalidOperation, ValueError, TypeError):
        return str(value)


@admin.register(Proposal)
class ProposalAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "agent",
        "system",
        "action",
        "record_id",
        "impact",
        "mode",
        "sla_left",
        "review",
        "status",
    ]
    list_filter = [QueueFilter, "system", "agent", "status", "mode"]
    search_fields = ["=record_id"]
    list_select_related = ["agent", "system", "action_type"]
    list_per_page = 50
    show_full_result_count = False
    actions = ["approve_selected"]
    change_form_template = "admin/approvals/proposal/change_form.html"
    # The page leads with the decision panel (template); every stored field stays one click away.
    fieldsets = [
        (
            "All details",
            {
                "classes": ["collapse"],
                "fields": [field.name for field in Proposal._meta.fields if field.name not in ("id",)],
            },
        )
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Proposal]:
        return (
            super()
            .get_queryset(request)
            .visible_to(request.user)  # type: ignore[attr-defined]  # ProposalQuerySet, which the stubs do not see
            .select_related("agent", "system", "action_type__resource", "approver", "decided_by", "rule")
        )

    def get_ordering(self, request: HttpRequest):
        # Oldest SLA first: what is most overdue is on top; proposals without an SLA after them.
        from django.db.models import F

        return [F("sla_due_at").asc(nulls_last=True), "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # decisions are made with the buttons, through the services; nothing is edited

    @admin.display(description="Action", ordering="action_type__name")
    def action(self, proposal: Proposal) -> str:
        return proposal.action_type.name

    @admin.display(description="Impact", ordering="impact_amount")
    def impact(self, proposal: Proposal) -> str:
        if proposal.impact_amount is None:
            return "unknown"
        return f"{_money(proposal.impact_amount)} {proposal.impact_currency}"

    @admin.display(description="SLA left", ordering="sla_due_at")
    def sla_left(self, proposal: Proposal) -> str:
        if proposal.sla_due_at is None or proposal.status not in AWAITING_DECISION:
            return "—"
        left = proposal.sla_due_at - timezone.now()
        minutes = int(left.total_seconds() // 60)
        if minutes < 0:
            return format_html(
                '<strong class="sla-overdue">overdue by {} h {} min</strong>', -minutes // 60, -minutes % 60
            )
        return f"{minutes // 60} h {minutes % 60} min"

    @admin.display(description="Second review", ordering="review_due_at")
    def review(self, proposal: Proposal) -> str:
        if proposal.review_outcome:
            return proposal.get_review_outcome_display()
        if not proposal.awaiting_review or proposal.review_due_at is None:
            return "—"
        if proposal.review_overdue:
            return format_html('<strong class="review-overdue">{}</strong>', "overdue (escalated)")
        return f"due {timezone.localtime(proposal.review_due_at):%Y-%m-%d %H:%M}"

    # --- The proposal page --------------------------------------------------------------------------------------

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        proposal = self.get_object(request, object_id)
        extra = {}
        if proposal is not None:
            extra = self._decision_context(request, proposal)
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def _decision_context(self, request: HttpRequest, proposal: Proposal) -> dict:
        record, unreadable = (None, "")
        if proposal.status in AWAITING_DECISION or proposal.status == ProposalStatus.MANUAL_TASK:
            record, unreadable = proposal_current_record(proposal=proposal, user=admin_user(request))
        diff = []
        for field, proposed in (proposal.payload or {}).items():
            now = (record or {}).get(field, (proposal.record_snapshot or {}).get(field))
            money = field in ("credit_limit",) or proposal.action_type.impact_field == field
            diff.append(
                {
                    "field": field,
                    "current": _money(now) if money and now is not None else now,
                    "proposed": _money(proposed) if money else proposed,
                    "changes": now != proposed,
                }
            )
        user = request.user
        can_decide = (
            proposal.awaiting_decision
            and not proposal.decided_by_id
            and Proposal.objects.awaiting_decision_by(user).filter(pk=proposal.pk).exists()
        )
        can_review = (
            proposal.awaiting_review and Proposal.objects.awaiting_review_by(user).filter(pk=proposal.pk).exists()
        )
        history = AuditEvent.objects.filter(proposal_id=proposal.pk).select_related("person").order_by("id")
        changes = moved(proposal, record) if record and proposal.status in AWAITING_DECISION else {}
        again = redecide(proposal, record) if changes and record else None
        return {
            "moved_now": [(field, then, now) for field, (then, now) in changes.items()],
            "new_impact": again.impact.amount if again else None,
            "new_reason": again.decision.reason if again else "",
            "proposal": proposal,
            "record": record,
            "unreadable": unreadable,
            "diff": diff,
            "payload_json": json.dumps(proposal.payload, indent=2, ensure_ascii=False),
            "history": history,
            "can_decide": can_decide,
            "can_review": can_review,
            "can_complete": proposal.status == ProposalStatus.MANUAL_TASK,
            **reversal_context(proposal, admin_user(request)),
            "title": f"{proposal.action_type.name} on {proposal.action_type.resource.label} {proposal.record_id}",
        }

    def get_urls(self):
        urls = [
            path("<uuid:proposal_id>/decide/", self.admin_site.admin_view(self.decide_view), name="approvals_decide"),
            path(
                "autonomy/<slug:agent_slug>/",
                self.admin_site.admin_view(self.autonomy_view),
                name="approvals_autonomy",
            ),
        ]
        return urls + super().get_urls()

    def autonomy_view(self, request: HttpRequest, agent_slug: str) -> TemplateResponse:
        """The agent's record per band and the threshold changes it suggests. Read-only: it links to the rule, where
        the business owner edits and signs off; nothing here changes a rule."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        agent = get_object_or_404(Agent.objects.visible_to(request.user), slug=agent_slug)
        asked = request.GET.get("days", "")
        days = int(asked) if asked.isdigit() and 1 <= int(asked) <= AUTONOMY_MAX_DAYS else DEFAULT_DAYS
        report = autonomy_report(agent, days=days)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Autonomy report: {agent.slug}",
            "report": report,
            "bad_days": bool(asked) and str(days) != asked,
            "max_days": AUTONOMY_MAX_DAYS,
            "raise_min_decided": RAISE_MIN_DECIDED,
            "tighten_min_decided": TIGHTEN_MIN_DECIDED,
            "max_raise_factor": MAX_RAISE_FACTOR,
            "tighten_rejection_rate": f"{float(TIGHTEN_REJECTION_RATE):.0%}",
        }
        return TemplateResponse(request, "admin/approvals/autonomy.html", context)

    def decide_view(self, request: HttpRequest, proposal_id):
        """Every button posts here; the service decides whether this person may, and audits the attempt."""
        if request.method != "POST":
            raise PermissionDenied
        proposal = get_object_or_404(self.get_queryset(request), pk=proposal_id)
        step = request.POST.get("step", "")
        note = request.POST.get("reason", "").strip()
        page = reverse("admin:approvals_proposal_change", args=[proposal.pk])
        try:
            if step == "approve":
                proposal_approve(proposal_id=proposal.pk, user=admin_user(request), channel=Channel.ADMIN, comment=note)
                self.message_user(request, "Approved.", messages.SUCCESS)
            elif step == "reject":
                if not note:
                    self.message_user(
                        request, "Give a reason to reject: the agent and the audit trail show it.", messages.ERROR
                    )
                    return HttpResponseRedirect(page)
                proposal_reject(proposal_id=proposal.pk, user=admin_user(request), channel=Channel.ADMIN, reason=note)
                self.message_user(request, "Rejected.", messages.SUCCESS)
            elif step in ("review", "flag"):
                if step == "flag" and not note:
                    self.message_user(request, "Say why you flag it.", messages.ERROR)
                    return HttpResponseRedirect(page)
                proposal_review(
                    proposal_id=proposal.pk,
                    user=admin_user(request),
                    channel=Channel.ADMIN,
                    flag=step == "flag",
                    comment=note,
                )
                self.message_user(request, "Flagged." if step == "flag" else "Reviewed.", messages.SUCCESS)
            elif step in ("reverse", "approve_reversal"):
                return reversal_step(self, request, proposal, step=step, note=note, page=page)
            elif step in ("done", "failed"):
                if step == "failed" and not note:
                    self.message_user(request, "Say why the task could not be done.", messages.ERROR)
                    return HttpResponseRedirect(page)
                proposal_manual_complete(
                    proposal_id=proposal.pk,
                    user=admin_user(request),
                    channel=Channel.ADMIN,
                    done=step == "done",
                    note=note,
                )
                self.message_user(request, "Recorded.", messages.SUCCESS)
            else:
                self.message_user(request, "Unknown step.", messages.ERROR)
        except InvalidTransition as exc:
            self.message_user(request, f"Already decided: {exc}", messages.WARNING)
        except RecordMoved as exc:
            self.message_user(request, str(exc), messages.WARNING)
        except NotYourDecision as exc:
            self.message_user(request, str(exc), messages.ERROR)
        return HttpResponseRedirect(page)

    @admin.action(description="Approve selected (one-approver band only)")
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Proposal]) -> None:
        approved, skipped = 0, []
        for proposal in queryset:
            if proposal.mode != DecisionMode.SINGLE:
                skipped.append(f"{proposal.record_id} ({proposal.get_mode_display().lower()}: open it to decide)")
                continue
            try:
                proposal_approve(proposal_id=proposal.pk, user=admin_user(request), channel=Channel.ADMIN)
                approved += 1
            except (InvalidTransition, NotYourDecision, RecordMoved) as exc:
                skipped.append(f"{proposal.record_id}: {exc}")
        summary = f"Approved {approved} proposal(s)"
        self.message_user(request, summary + (f"; not approved: {'; '.join(skipped)}" if skipped else "."))
