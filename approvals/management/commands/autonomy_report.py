"""Print an agent's autonomy report: its record per threshold band and the threshold changes it suggests."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals.autonomy import autonomy_report
from approvals.autonomy_records import DEFAULT_DAYS, AutonomyReport
from governance.models import Agent


class Command(BaseCommand):
    help = (
        "Report AGENT's proposals of the last days per rule and band (rates, failures, reversals, SLA breaches, "
        "median time to decision) and the threshold changes the record suggests. Changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("agent", help="The agent's slug.")
        parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"The window (default {DEFAULT_DAYS}).")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args, **options) -> None:
        agent = Agent.objects.filter(slug=options["agent"]).first()
        if agent is None:
            raise CommandError(f"No agent {options['agent']!r}.")
        if options["days"] < 1:
            raise CommandError("--days must be at least 1.")
        report = autonomy_report(agent, days=options["days"])
        if options["json"]:
            self.stdout.write(json.dumps(report.as_json(), indent=2, ensure_ascii=False))
        else:
            self.stdout.write("\n".join(describe(report)))


def describe(report: AutonomyReport) -> list[str]:
    """The report in plain words, one paragraph per band."""
    lines = [
        f"Autonomy report for {report.agent.slug}: the last {report.days} day{'' if report.days == 1 else 's'} "
        f"({report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC).",
        "Nothing here changes a rule: each suggestion is for the business owner to weigh, edit and sign off.",
        "",
    ]
    if not report.bands:
        lines.append(f"{report.agent.slug} made no proposals in this window.")
    for row in report.bands:
        heading = f"“{row.rule_name}”, band {row.band_text}" if row.rule_id else row.band_text
        if row.band and not row.still_in_force:
            heading += " (changed since)"
        lines += [heading, f"  {_outcomes(row)}"]
    lines += ["", f"All proposals: {_outcomes(report.totals)}", ""]
    if not report.suggestions:
        lines.append("Suggestions: none. The record suggests no change to any threshold.")
    else:
        lines.append("Suggestions:")
        for number, suggestion in enumerate(report.suggestions, start=1):
            lines.append(f"{number}. {suggestion.text}")
            lines.append(f"   Why: {'; '.join(suggestion.evidence)}.")
    return lines


def _outcomes(row) -> str:
    decided = row.decided_by_people
    parts = [f"{row.proposed} proposed", f"{row.auto_approved} auto-approved", f"{decided} decided by people"]
    if decided:
        parts.append(
            f"{row.approved} approved ({row.approval_rate_text}), {row.rejected} rejected ({row.rejection_rate_text})"
        )
    parts += [
        f"{row.failed} failed",
        f"{row.reversed} reversed",
        f"{row.flagged} flagged",
        f"{row.sla_breaches} past their SLA",
        f"median time to decision {row.median_text}",
    ]
    return "; ".join(parts) + "."
