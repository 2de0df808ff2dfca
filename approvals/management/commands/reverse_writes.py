"""Plan, or plan and run, the reversal of an agent's or a system's recent writes, or of one proposal's write."""

import time
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, Q

from approvals.management.targets import agent_or_system
from approvals.models import Proposal, Reversal, ReversalStep
from approvals.reversal import ReversalRefused, reversal_plan, reversal_report, reversal_start
from approvals.reversal_single import proposal_reverse
from audit.choices import Channel
from core.progress import Progress


class Command(BaseCommand):
    help = (
        "Reverse the executed writes of an agent (--agent) or a system (--system) in the last --hours (24), or the "
        "write of one proposal (--proposal ID). "
        "--plan (the default) prints the plan, newest first; --execute also runs it on the Celery workers and waits "
        "for the report. Exit 1 when a step failed or was held for a person."
    )

    def add_arguments(self, parser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--agent", help="An agent's slug.")
        target.add_argument("--system", help="A system's slug.")
        target.add_argument("--proposal", help="One executed proposal's id: reverse its write only.")
        parser.add_argument("--hours", type=float, default=24.0, help="The window, back from now (default 24).")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--plan", action="store_true", help="Only print the plan (the default).")
        mode.add_argument("--execute", action="store_true", help="Plan, then run the reversal.")
        parser.add_argument("--reason", default="", help="Why (kept in the audit trail).")
        parser.add_argument("--timeout", type=float, default=300.0, help="Seconds to wait for the workers.")

    def handle(self, *args, **options) -> None:
        try:
            reversal = self._plan(options)
        except ReversalRefused as exc:
            raise CommandError(str(exc)) from exc
        self._print_plan(reversal, options["hours"])
        if not options["execute"]:
            self.stdout.write("Nothing was changed (plan only). Run again with --execute to reverse.")
            return
        if not reversal.steps.filter(kind=ReversalStep.Kind.REVERSIBLE).exists():
            self.stdout.write("Nothing to reverse.")
            reversal_start(reversal_id=reversal.pk, channel=Channel.COMMAND)
            return
        reversal_start(reversal_id=reversal.pk, channel=Channel.COMMAND)
        self.stdout.write(f"Reversal {reversal.pk} handed to the workers; waiting up to {options['timeout']:g} s…")
        deadline = time.monotonic() + options["timeout"]
        with Progress(self.stderr, total=None, label=f"reversal {reversal.pk}", unit="steps") as progress:
            while time.monotonic() < deadline:
                reversal.refresh_from_db()
                progress.update(*_steps_finished(reversal))
                if reversal.status in (Reversal.Status.DONE, Reversal.Status.INCOMPLETE):
                    break
                time.sleep(0.5)
        if reversal.status not in (Reversal.Status.DONE, Reversal.Status.INCOMPLETE):
            self.stderr.write(
                f"Reversal {reversal.pk} is still {reversal.get_status_display().lower()}: are the Celery workers "
                "running? It continues when they are; see it in the admin."
            )
        self._print_report(reversal)
        report = reversal_report(reversal)
        if report["failed"] or report["held"] or report["remaining"]:
            raise SystemExit(1)

    def _plan(self, options) -> Reversal:
        if options["proposal"]:
            try:
                proposal = Proposal.objects.get(pk=uuid.UUID(options["proposal"]))
            except (ValueError, Proposal.DoesNotExist):
                raise CommandError(f"No proposal {options['proposal']}.") from None
            # The command line is the operator's own act (shell access to the server): planned, not waiting.
            return proposal_reverse(
                proposal_id=proposal.pk, user=None, channel=Channel.COMMAND, reason=options["reason"], start=False
            )
        agent, system = agent_or_system(options)
        return reversal_plan(
            agent=agent, system=system, hours=options["hours"], channel=Channel.COMMAND, reason=options["reason"]
        )

    def _print_plan(self, reversal: Reversal, hours: float) -> None:
        steps = list(reversal.steps.select_related("proposal__action_type").order_by("position"))
        window = "" if reversal.proposal_id else f", last {hours:g} h"
        self.stdout.write(f"Reversal {reversal.pk} of {reversal.scope_label}{window}: {len(steps)} write(s).")
        if reversal.moving:
            self.stdout.write(
                "WARNING: the window is moving: these writes are not stopped (turn the kill switch on first). "
                "Writes after this plan are not part of it."
            )
        for step in steps:
            proposal = step.proposal
            when = f"{proposal.executed_at:%Y-%m-%d %H:%M:%S}" if proposal.executed_at else "—"
            self.stdout.write(
                f"  {step.position:>3}. {when}  {proposal.action_type.name:<22} {proposal.record_id:<10} "
                f"{step.get_kind_display().upper()}: {step.explanation}"
            )

    def _print_report(self, reversal: Reversal) -> None:
        report = reversal_report(reversal)
        self.stdout.write(f"Reversal {reversal.pk}: {reversal.get_status_display()}.")
        labels = {
            "done": "reversed",
            "held": "held for a person",
            "failed": "FAILED",
            "remaining": "still to do",
            "not_reversible": "not reversible",
            "skipped": "nothing to do",
        }
        for key, label in labels.items():
            for step in report[key]:
                detail = step.last_error or step.explanation
                self.stdout.write(
                    f"  {label:<18} {step.proposal.action_type.name:<22} {step.proposal.record_id:<10} {detail}"
                )


def _steps_finished(reversal: Reversal) -> tuple[int, int]:
    """(finished, total) of the steps a worker goes through: all but the not-reversible ones, which are only listed."""
    counts = reversal.steps.exclude(kind=ReversalStep.Kind.NOT_REVERSIBLE).aggregate(
        total=Count("pk"),
        finished=Count("pk", filter=~Q(status__in=[ReversalStep.Status.PLANNED, ReversalStep.Status.RETRYING])),
    )
    return counts["finished"], counts["total"]
