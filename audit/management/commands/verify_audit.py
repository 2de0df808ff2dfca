"""Check the audit trail's hash chain and its newest signed checkpoint; exit 1 at the first break."""

from django.core.management.base import BaseCommand, CommandError

from audit.integrity import verify_and_checkpoint, verify_chain
from audit.models import AuditEvent
from core.progress import Progress


class Command(BaseCommand):
    help = (
        "Verify the audit hash chain and its newest signed checkpoint; exits 1 and names the first broken event "
        "when it does not hold (edited, deleted, reordered, or a truncated tail). Progress goes to stderr."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--checkpoint",
            action="store_true",
            help="Also record the result and sign the chain's head, as the periodic job does.",
        )

    def handle(self, *args, **options) -> None:
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
