"""Import a downstream MCP server's tools into the inventory."""

from django.core.management.base import BaseCommand, CommandError

from audit.choices import Channel
from connectors.base import ConnectorError
from connectors.mcp.importer import import_tools
from governance.choices import ConnectorKind
from governance.models import System


class Command(BaseCommand):
    help = (
        "List SYSTEM's MCP tools and import the ones that write as actions (not reversible until the business owner "
        "says how); read-only tools are listed for mapping as reads in the connector settings."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("system", help="The slug of an mcp system.")
        parser.add_argument("--resource", default="records", help="The resource new actions belong to.")

    def handle(self, *args, **options) -> None:
        system = System.objects.filter(slug=options["system"]).first()
        if system is None:
            raise CommandError(f"No system {options['system']!r}.")
        if system.connector_kind != ConnectorKind.MCP:
            raise CommandError(f"{system} is not an MCP system (its connector kind is {system.connector_kind}).")
        try:
            report = import_tools(system=system, resource_name=options["resource"], channel=Channel.COMMAND)
        except ConnectorError as exc:
            raise CommandError(str(exc)) from exc
        for label, names in (
            ("new actions", report.created),
            ("updated actions", report.updated),
            ("read-only tools (map them under connector settings 'reads')", report.read_candidates),
            ("skipped", report.skipped),
            ("changed since approved, paused (approve them in the admin)", report.paused),
        ):
            if names:
                self.stdout.write(f"{label}: {', '.join(names)}")
        self.stdout.write(f"Imported the tools of {system}.")
