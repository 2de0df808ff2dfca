"""The approval queue and the proposal page: what awaits me, what I need to decide, and the buttons to do it."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.cache import never_cache

from approvals.admin.decision_links import arrived_by_link, led_to_decision, link_view, posted_link
from approvals.admin.decision_page import decision_context
from approvals.admin.single_reversal import reversal_step
from approvals.autonomy import autonomy_report
from approvals.autonomy_records import (
    DEFAULT_DAYS,
    MAX_RAISE_FACTOR,
    RAISE_MIN_DECIDED,
    TIGHTEN_MIN_DECIDED,
    TIGHTEN_REJECTION_RATE,
)
from approvals.choices import AWAITING_DECISION, DecisionMode
from approvals.decision_links import LinkRefused
from approvals.decisions import (
    NotYourDecision,
    proposal_approve,
    proposal_manual_complete,
    proposal_reject,
    proposal_review,
)
from approvals.freshness import RecordMoved
from approvals.models import Proposal
from approvals.transitions import InvalidTransition
from approvals.wording import amount_text, proposal_sentence
from audit.choices import Channel
from core.admin import admin_user
from governance.models import Agent

AUTONOMY_MAX_DAYS = 366


@dataclass(frozen=True)
class Queue:
    """One view of the approval queue: its name in the filter, the page's title, and its columns."""

    label: str
    title: str
    columns: tuple[str, ...]


# Who, what, how much and the clock first, then band and status: what the approver picks a proposal by comes first,
# and the list fits a 1366-px screen beside the admin's menu and the filters (the sentence wraps; figures do not).
DECIDING = ("agent", "what", "impact", "sla_left", "band", "status")
REVIEWING = ("agent", "what", "impact", "review", "band", "status")  # the second review's clock instead of the SLA's
QUEUES = {
    "mine": Queue("Awaiting my decision", "Waiting for you", DECIDING),
    "review": Queue("Awaiting my review", "Waiting for your review", REVIEWING),
    "review_overdue": Queue("Review overdue", "Reviews overdue", REVIEWING),
    "all": Queue("All proposals", "All proposals", DECIDING),
}
DEFAULT_QUEUE = "mine"  # the signed-in person's own queue


def queue_of(request: HttpRequest) -> str:
    """The queue view asked for; anything unknown lists every proposal the person may see, as the filter does."""
    value = request.GET.get(QueueFilter.parameter_name) or DEFAULT_QUEUE
    return value if value in QUEUES else "all"


def time_left(proposal: Proposal) -> tuple[str, bool]:
    """("3 h 59 min", False) before the SLA, ("overdue by 1 h 2 min", True) after it; ("", False) when the proposal
    has no SLA or waits for no decision."""
    if proposal.sla_due_at is None or proposal.status not in AWAITING_DECISION:
        return "", False
    minutes = int((proposal.sla_due_at - timezone.now()).total_seconds() // 60)
    if minutes < 0:
        return f"overdue by {-minutes // 60} h {-minutes % 60} min", True
    return f"{minutes // 60} h {minutes % 60} min", False


class QueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [(value, queue.label) for value, queue in QUEUES.items()]

    def choices(self, changelist):
        # No "All" entry of Django's own: the default view is the signed-in user's queue.
        for value, label in self.lookup_choices:
            yield {
                "selected": (self.value() or DEFAULT_QUEUE) == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request, queryset):
        value = self.value() or DEFAULT_QUEUE
        if value == "mine":
            return queryset.awaiting_decision_by(request.user)
        if value == "review":
            return queryset.awaiting_review_by(request.user)
        if value == "review_overdue":  # everyone's: an overdue review is on-call's business too, never dropped
            return queryset.review_overdue()
        return queryset


@admin.register(Proposal)
class ProposalAdmin(admin.ModelAdmin):
    list_display = DECIDING
    list_display_links = ["what"]  # the sentence opens the proposal's page
    list_filter = [QueueFilter, "system", "agent", "status", "mode"]
    search_fields = ["=record_id"]
    list_select_related = ["agent", "system", "action_type__resource"]
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

    def get_list_display(self, request: HttpRequest):
        return QUEUES[queue_of(request)].columns

    def changelist_view(self, request: HttpRequest, extra_context=None):
        return super().changelist_view(request, {"title": QUEUES[queue_of(request)].title, **(extra_context or {})})

    @admin.display(description="Proposal", ordering="action_type__name")
    def what(self, proposal: Proposal) -> str:
        return proposal_sentence(proposal)

    @admin.display(description="Impact", ordering="impact_amount")
    def impact(self, proposal: Proposal) -> str:
        if proposal.impact_amount is None:
            return "unknown"
        return f"{amount_text(proposal.impact_amount)} {proposal.impact_currency}"

    @admin.display(description="Band", ordering="mode")
    def band(self, proposal: Proposal) -> str:
        return proposal.get_mode_display()

    @admin.display(description="Time left", ordering="sla_due_at")
    def sla_left(self, proposal: Proposal) -> str:
        left, overdue = time_left(proposal)
        if not left:
            return "—"
        return format_html('<strong class="sla-overdue">{}</strong>', left) if overdue else left

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
            extra = decision_context(proposal, user=admin_user(request), viewer=request.user)
            extra["time_left"], extra["overdue"] = time_left(proposal)
            extra["decision_link"] = arrived_by_link(request, proposal)  # opened from the e-mail: the form says so
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def get_urls(self):
        urls = [
            path("<uuid:proposal_id>/decide/", self.admin_site.admin_view(self.decide_view), name="approvals_decide"),
            # The e-mailed link: not admin_view, whose sign-in is the admin's own; this one sends people to LOGIN_URL.
            path(
                "<uuid:proposal_id>/link/<str:token>/",
                never_cache(self.decision_link_view),
                name="approvals_decision_link",
            ),
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

    def decision_link_view(self, request: HttpRequest, proposal_id, token: str):
        """The link in the approver's e-mail: sign in, then the proposal's page (approvals/admin/decision_links.py)."""
        return link_view(self, request, proposal_id, token)

    def decide_view(self, request: HttpRequest, proposal_id):
        """Every button posts here; the service decides whether this person may, and audits the attempt."""
        if request.method != "POST":
            raise PermissionDenied
        proposal = get_object_or_404(self.get_queryset(request), pk=proposal_id)
        step = request.POST.get("step", "")
        note = request.POST.get("reason", "").strip()
        page = reverse("admin:approvals_proposal_change", args=[proposal.pk])
        try:
            link = posted_link(request, proposal, step=step)  # from the e-mail's link: only for that link's proposal
        except LinkRefused as exc:
            self.message_user(request, f"{exc.refusal.title} Nothing was decided. {exc.refusal.detail}", messages.ERROR)
            return HttpResponseRedirect(page)
        try:
            if step == "approve":
                proposal_approve(proposal_id=proposal.pk, user=admin_user(request), channel=Channel.ADMIN, comment=note)
                led_to_decision(request, link)
                self.message_user(request, "Approved.", messages.SUCCESS)
            elif step == "reject":
                if not note:
                    self.message_user(
                        request, "Give a reason to reject: the agent and the audit trail show it.", messages.ERROR
                    )
                    return HttpResponseRedirect(page)
                proposal_reject(proposal_id=proposal.pk, user=admin_user(request), channel=Channel.ADMIN, reason=note)
                led_to_decision(request, link)
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
