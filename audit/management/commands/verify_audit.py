"""Check the audit trail's hash chain and its signed checkpoints (and their log copies); exit 1 at the first break."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError

from audit.checkpoint_log import compare_with_log
from audit.integrity import verify_and_checkpoint, verify_chain
from audit.models import AuditEvent
from core.progress import Progress


class Command(BaseCommand):
    help = (
        "Verify the audit hash chain and its signed checkpoints; exits 1 and names the first broken event or "
        "checkpoint when it does not hold (edited, deleted, reordered, a truncated tail, a checkpoint altered or "
        "deleted). Progress goes to stderr."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--checkpoint",
            action="store_true",
            help="Also record the result and sign the chain's head, as the periodic job does.",
        )
        parser.add_argument(
            "--checkpoint-log",
            metavar="FILE",
            help="First compare the checkpoints with the copies in this log (plain or JSON lines; - for stdin): "
            "one the database lost or that differs fails the check. Finds the newest checkpoints deleted.",
        )

    def handle(self, *args, **options) -> None:
        if options["checkpoint_log"]:
            # Before anything is signed: a new checkpoint over a chain rewritten behind deleted ones would bless it.
            self._compare_with_log(options["checkpoint_log"])
        with Progress(self.stderr, total=AuditEvent.objects.count(), label="verify_audit", unit="events") as progress:
            if options["checkpoint"]:
                verification = verify_and_checkpoint(full=True, progress=progress.update)
                ok, checked, reason = verification.ok, verification.checked, verification.reason
            else:
                report = verify_chain(progress=progress.update)
                ok, checked, reason = report.ok, report.checked, report.reason
            progress.update(checked)
        if not ok:
            raise CommandError(f"Audit chain broken after {checked} good event(s): {reason}.", returncode=1)
        self.stdout.write(f"Audit chain intact: {checked} event(s).")

    def _compare_with_log(self, path: str) -> None:
        with _lines(path) as lines:
            comparison = compare_with_log(lines, source="stdin" if path == "-" else path)
        if comparison.problem is not None:
            raise CommandError(f"Audit checkpoints do not match the log: {comparison.problem}.", returncode=1)
        self.stdout.write(
            f"Checkpoint log: {comparison.copies} copy(ies) of {comparison.matched} checkpoint(s) match the "
            f"database; {comparison.uncopied} checkpoint(s) of the database have no copy in it."
        )


@contextmanager
def _lines(path: str) -> Iterator[Iterator[str]]:
    if path == "-":
        yield iter(sys.stdin)
        return
    try:
        handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror}.") from exc
    with handle:
        yield iter(handle)
