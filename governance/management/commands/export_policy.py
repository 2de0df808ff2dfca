"""Write the inventory's terms as one YAML document (policy as code): no secrets, the same bytes for the same terms."""

from pathlib import Path

from django.core.management.base import BaseCommand

from governance.policy_document import export_text


class Command(BaseCommand):
    help = (
        "Print (or write to --output) the inventory as one YAML policy document: systems with their resources, "
        "actions and threshold rules, agents with their scope grants and budgets. Credentials, tokens, sign-offs and "
        "history are left out (the document's header says what and why). Apply it with apply_policy."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--output", "-o", help="Write the document to this file instead of printing it.")

    def handle(self, *args, **options) -> None:
        text = export_text()
        if options["output"]:
            Path(options["output"]).write_text(text, encoding="utf-8")
            self.stderr.write(f"Policy written to {options['output']}.")
        else:
            self.stdout.write(text, ending="")
