"""Poll batch (legacy_batch) systems now, whatever their schedule: `poll_legacy [--system S]`."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit.choices import Channel
from connectors.legacy_batch.services import batch_poll
from governance.choices import ConnectorKind, WriteMode
from governance.models import System


class Command(BaseCommand):
    help = "Take the files waiting in batch systems' drop folders now; exit 1 when a system could not be polled."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--system", help="Only this system (its slug); by default every batch system not disabled.")

    def handle(self, *args, system: str | None = None, **options) -> None:
        batch = System.objects.filter(connector_kind=ConnectorKind.LEGACY_BATCH)
        if system:
            systems = list(batch.filter(slug=system))
            if not systems:
                raise CommandError(f"No batch system {system!r}.")
        else:
            systems = list(batch.exclude(write_mode=WriteMode.DISABLED))
        failed = []
        for each in systems:
            report = batch_poll(system=each, channel=Channel.COMMAND)
            self.stdout.write(report.summary())
            for outcome in report.files:
                line = f"  {outcome.name}: {outcome.status}"
                if outcome.reason:
                    line += f" — {outcome.reason}"
                self.stdout.write(line)
            if report.error:
                failed.append(each.slug)
        if failed:
            raise CommandError(f"Not polled: {', '.join(failed)}.")
