"""The way back in the admin: the kill switch (confirmed, with a reason), reversals (plan, run, watch), drills.

Every button calls the same service functions as the commands (`approvals.killswitch`, `approvals.reversal`,
`approvals.drills`), so the checks and audit events are the same from any door.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from approvals.choices import ProposalStatus
from approvals.drills import DrillRefused, drill_request
from approvals.killswitch import (
    HOLDABLE,
    SwitchTarget,
    is_on,
    kill_switch_off,
    kill_switch_on,
    may_pull,
    may_release,
)
from approvals.models import Drill, Reversal, ReversalStep
from approvals.reversal import ReversalRefused, reversal_plan, reversal_report, reversal_start, validate_hours
from audit.choices import Channel
from core.admin import ReadOnlyAdminMixin, admin_user
from governance.models import Agent, GlobalSwitch, System


class SwitchForm(forms.Form):
    reason = forms.CharField(max_length=300, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))
    confirm = forms.BooleanField(label="I understand what this does.")


class PlanForm(forms.Form):
    hours = forms.FloatField(initial=24, min_value=0.01, help_text="Executed writes of the last N hours.")
    reason = forms.CharField(max_length=300, required=False)

    def clean_hours(self) -> float:
        return validate_hours(self.cleaned_data["hours"])


def _target(request: HttpRequest) -> SwitchTarget:
    agent_slug, system_slug = request.GET.get("agent"), request.GET.get("system")
    if agent_slug and system_slug:
        raise Http404("One agent or one system.")
    if agent_slug:
        return SwitchTarget(agent=get_object_or_404(Agent, slug=agent_slug))
    if system_slug:
        return SwitchTarget(system=get_object_or_404(System, slug=system_slug))
    return SwitchTarget()


class StepInline(admin.TabularInline):
    model = ReversalStep
    extra = 0
    can_delete = False
    fields = ("position", "write", "kind", "status", "explanation", "last_error", "attempts")
    readonly_fields = fields

    @admin.display(description="Write")
    def write(self, step: ReversalStep) -> str:
        proposal = step.proposal
        return f"{proposal.executed_at:%Y-%m-%d %H:%M} {proposal.action_type.name} on {proposal.record_id}"

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Reversal)
class ReversalAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "created_at", "scope", "status", "requested_by", "moving", "finished_at"]
    list_filter = ["status", "agent", "system"]
    list_select_related = ["agent", "system", "requested_by"]
    change_form_template = "admin/approvals/reversal/change_form.html"
    inlines = [StepInline]
    readonly_fields = (
        "agent",
        "system",
        "window_start",
        "window_end",
        "status",
        "requested_by",
        "channel",
        "reason",
        "moving",
        "rounds",
        "created_at",
        "started_at",
        "finished_at",
    )
    fields = readonly_fields

    @admin.display(description="Scope")
    def scope(self, reversal: Reversal) -> str:
        return reversal.scope_label

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("plan/", view(self.plan_view), name="approvals_reversal_plan"),
            path("<int:reversal_id>/run/", view(self.run_view), name="approvals_reversal_run"),
            path("kill-switch/", view(self.kill_switch_view), name="approvals_kill_switch"),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        reversal = get_object_or_404(Reversal, pk=object_id)
        report = reversal_report(reversal)
        total = sum(len(steps) for steps in report.values())
        extra = {
            "report": report,
            "total": total,
            "reversible": reversal.steps.filter(kind=ReversalStep.Kind.REVERSIBLE).count(),
            "may_run": reversal.status == Reversal.Status.PLANNED and self._may_reverse(request, reversal),
            "running": reversal.status == Reversal.Status.RUNNING,
        }
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    @staticmethod
    def _may_reverse(request: HttpRequest, reversal: Reversal) -> bool:
        return may_pull(
            admin_user(request),
            SwitchTarget(agent=reversal.agent) if reversal.agent_id else SwitchTarget(system=reversal.system),
        )

    def plan_view(self, request: HttpRequest) -> TemplateResponse | HttpResponseRedirect:
        """Step one: the window. Planning reads the records but changes nothing; the plan page has the Run button."""
        target = _target(request)
        if target.agent is None and target.system is None:
            raise Http404("Reverse the writes of an agent or of a system.")
        if not may_pull(admin_user(request), target):
            raise PermissionDenied
        form = PlanForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                reversal = reversal_plan(
                    agent=target.agent,
                    system=target.system,
                    hours=form.cleaned_data["hours"],
                    user=admin_user(request),
                    channel=Channel.ADMIN,
                    reason=form.cleaned_data["reason"],
                )
            except ReversalRefused as exc:
                form.add_error(None, str(exc))
            else:
                return HttpResponseRedirect(reverse("admin:approvals_reversal_change", args=[reversal.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Reverse recent writes of {target.label}",
            "form": form,
            "target": target,
            "switch_on": is_on(target),
            "switch_url": reverse("admin:approvals_kill_switch") + "?" + request.GET.urlencode(),
        }
        return TemplateResponse(request, "admin/approvals/reversal/plan.html", context)

    def run_view(self, request: HttpRequest, reversal_id: int) -> HttpResponseRedirect:
        reversal = get_object_or_404(Reversal, pk=reversal_id)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:approvals_reversal_change", args=[reversal.pk]))
        if not self._may_reverse(request, reversal):
            raise PermissionDenied
        try:
            reversal_start(reversal_id=reversal.pk, user=admin_user(request), channel=Channel.ADMIN)
        except ReversalRefused as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"Reversal {reversal.pk} handed to the workers; this page follows it.")
        return HttpResponseRedirect(reverse("admin:approvals_reversal_change", args=[reversal.pk]))

    def kill_switch_view(self, request: HttpRequest) -> TemplateResponse | HttpResponseRedirect:
        """The kill switch for an agent, a system's writes, or everything: what it does, a reason, a confirmation."""
        target = _target(request)
        if not may_pull(admin_user(request), target):
            raise PermissionDenied
        on = is_on(target)
        form = SwitchForm(request.POST or None)
        refusal = may_release(admin_user(request), target) if on else None
        if request.method == "POST" and refusal:
            form.add_error(None, f"You may not release it: {refusal}.")  # the service refuses it as well
        elif request.method == "POST" and form.is_valid():
            switch = kill_switch_off if on else kill_switch_on
            try:
                result = switch(
                    target=target, reason=form.cleaned_data["reason"], user=admin_user(request), channel=Channel.ADMIN
                )
            except ValidationError as exc:
                form.add_error("reason", exc)
            else:
                self.message_user(request, result.message, messages.WARNING if not on else messages.SUCCESS)
                if target.agent is not None:
                    return HttpResponseRedirect(reverse("admin:governance_agent_change", args=[target.agent.pk]))
                if target.system is not None:
                    return HttpResponseRedirect(reverse("admin:governance_system_change", args=[target.system.pk]))
                return HttpResponseRedirect(reverse("admin:index"))
        held = target.proposals().filter(status=ProposalStatus.ON_HOLD).count() if on else 0
        holdable = 0 if on else target.proposals().filter(HOLDABLE).count()
        switch_row = (
            GlobalSwitch.objects.filter(pk=1).first() if target.agent is None and target.system is None else None
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Kill switch: {target.label}",
            "target": target,
            "on": on,
            "form": form,
            "held": held,
            "holdable": holdable,
            "reason": (
                target.agent.disabled_reason
                if target.agent
                else target.system.frozen_reason
                if target.system
                else switch_row.reason
                if switch_row
                else ""
            ),
        }
        return TemplateResponse(request, "admin/approvals/kill_switch.html", context)


@admin.register(Drill)
class DrillAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["started_at", "system", "passed", "duration", "performed_by", "failure"]
    list_filter = ["passed", "system"]
    list_select_related = ["system", "performed_by"]
    readonly_fields = [field.name for field in Drill._meta.fields]
    change_list_template = "admin/approvals/drill/change_list.html"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [path("run/", view(self.run_view), name="approvals_drill_run"), *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        systems = [
            system
            for system in System.objects.order_by("slug")
            if system.environment == "staging" and may_pull(admin_user(request), SwitchTarget(system=system))
        ]
        return super().changelist_view(request, {**(extra_context or {}), "drill_systems": systems})

    def run_view(self, request: HttpRequest) -> HttpResponseRedirect:
        """Queue a drill on a staging system; it shows in the list when the worker has run it."""
        changelist = reverse("admin:approvals_drill_changelist")
        if request.method != "POST":
            return HttpResponseRedirect(changelist)
        system = get_object_or_404(System, pk=request.POST.get("system"))
        try:
            target = drill_request(system=system, user=admin_user(request), channel=Channel.ADMIN)
        except DrillRefused as exc:  # said on the page, nothing queued
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(changelist)
        self.message_user(request, f"Drill on {target} started: it appears below when the worker has run it.")
        return HttpResponseRedirect(changelist + f"?system__id__exact={target.pk}")
