"""Run a rollback drill on a staging system and record it."""

from django.core.management.base import BaseCommand, CommandError

from approvals.drills import DrillRefused, rollback_drill
from audit.choices import Channel
from governance.models import System


class Command(BaseCommand):
    help = (
        "Write to the drill record of a staging system (or of a production system's staging twin) with each "
        "reversible action, reverse the writes, check the record is back, and record the drill. Exit 1 if it fails."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--system", required=True, help="A staging system's slug (or a production one with a twin)."
        )

    def handle(self, *args, **options) -> None:
        system = System.objects.filter(slug=options["system"]).first()
        if system is None:
            raise CommandError(f"No system {options['system']!r}.")
        try:
            drill = rollback_drill(system=system, channel=Channel.COMMAND)
        except DrillRefused as exc:
            raise CommandError(str(exc)) from exc
        for entry in drill.report:
            if "action" in entry:
                state = (
                    "reversed" if entry.get("reversed") else entry.get("skipped") or entry.get("why", "not reversed")
                )
                self.stdout.write(f"  {entry['action']:<24} executed={entry.get('executed', False)!s:<5} {state}")
            else:
                self.stdout.write(
                    f"  record {entry['record']}: {'back as before' if entry['back_as_before'] else entry}"
                )
        seconds = drill.duration.total_seconds() if drill.duration else 0
        if drill.passed:
            self.stdout.write(f"Drill {drill.pk} on {drill.system} passed in {seconds:.1f} s.")
            return
        self.stderr.write(f"Drill {drill.pk} on {drill.system} FAILED in {seconds:.1f} s: {drill.failure}")
        raise SystemExit(1)
