"""Export audit events to a file (or stdout) as CSV or JSON lines: the admin's export, for big ranges and scripts."""

from __future__ import annotations

import codecs
from datetime import datetime, time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from audit.exports import EXPORT_FORMATS, csv_lines, jsonl_lines
from audit.models import AuditEvent
from core.progress import Progress


class Command(BaseCommand):
    help = (
        "Export audit events, oldest first, in the admin export's columns: CSV (for people; PostgreSQL writes it with "
        "COPY) or JSON lines (for a SIEM). OUTPUT is a file, or - for stdout; progress goes to stderr."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("output", help="The file to write (replaced), or - for stdout.")
        parser.add_argument("--format", choices=sorted(EXPORT_FORMATS), default="csv")
        parser.add_argument("--since", help="From this date or time (ISO 8601; a date means its start).")
        parser.add_argument("--until", help="Before this date or time (ISO 8601; a date means its start).")
        parser.add_argument("--system", help="Only events of this system (slug).")
        parser.add_argument("--agent", help="Only events of this agent (slug).")

    def handle(self, *args, **options) -> None:
        events = AuditEvent.objects.all()
        if options["since"]:
            events = events.filter(occurred_at__gte=_moment(options["since"], "--since"))
        if options["until"]:
            events = events.filter(occurred_at__lt=_moment(options["until"], "--until"))
        if options["system"]:
            events = events.filter(system__slug=options["system"])
        if options["agent"]:
            events = events.filter(agent__slug=options["agent"])
        # The events there are now, and no later ones: the count the progress shows is the count written (the trail
        # is append-only, so nothing below the newest id comes or goes meanwhile).
        newest = events.aggregate(newest=Max("id"))["newest"]
        events = events.filter(id__lte=newest) if newest is not None else events.none()
        total = events.count()
        lines = csv_lines(events) if options["format"] == "csv" else jsonl_lines(events)
        write, close = self._sink(options["output"])
        rows = -1 if options["format"] == "csv" else 0  # the CSV header is a line too
        try:
            with Progress(self.stderr, total=total, label="export_audit", unit="events") as progress:
                for chunk in lines:
                    data = chunk.encode() if isinstance(chunk, str) else chunk
                    write(data)
                    # A row is a line (a CSV cell with a line break in it would count twice: only the bar shows it).
                    rows += data.count(b"\n")
                    progress.update(min(rows, total))
                progress.update(total)
        finally:
            close()
        if options["output"] != "-":
            self.stdout.write(f"Exported {total:,} event(s) as {options['format']} to {options['output']}.")

    def _sink(self, output: str) -> tuple[Any, Any]:
        if output == "-":
            decoder = codecs.getincrementaldecoder("utf-8")()  # COPY's blocks may end inside a character

            def write(data: bytes) -> None:
                self.stdout.write(decoder.decode(data), ending="")

            return write, self.stdout.flush
        try:
            handle = open(output, "wb")  # noqa: SIM115 - closed by the caller's finally
        except OSError as exc:
            raise CommandError(f"Cannot write {output}: {exc.strerror}.") from exc
        return handle.write, handle.close


def _moment(value: str, option: str) -> datetime:
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"{option} {value!r} is not an ISO 8601 date or time.")
        moment = datetime.combine(day, time.min)
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment
