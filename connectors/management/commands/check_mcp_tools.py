"""Compare MCP systems' live tools with the definitions their actions pinned, now (the beat does it periodically)."""

from django.core.management.base import BaseCommand, CommandError

from audit.choices import Channel
from connectors.mcp.pinning import mcp_systems, tools_check
from governance.choices import ConnectorKind
from governance.models import System


class Command(BaseCommand):
    help = (
        "List each MCP system's tools and compare them with the definitions its actions pinned: a changed or missing "
        "tool pauses its action and tells the system's owner, who approves the new definition in the admin. New "
        "tools are only reported. Exit 1 when a tool changed or a system could not be asked."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--system", help="Only this mcp system (its slug).")

    def handle(self, *args, **options) -> None:
        if options["system"]:
            system = System.objects.filter(slug=options["system"]).first()
            if system is None:
                raise CommandError(f"No system {options['system']!r}.")
            if system.connector_kind != ConnectorKind.MCP:
                raise CommandError(f"{system} is not an MCP system (its connector kind is {system.connector_kind}).")
            systems = [system]
        else:
            systems = mcp_systems()
        reports = [tools_check(system=system, channel=Channel.COMMAND) for system in systems]
        for report in reports:
            self.stdout.write(report.summary())
        if not reports:
            self.stdout.write("No MCP systems.")
        if any(report.error or report.paused or report.still_paused for report in reports):
            raise CommandError("Some tools changed since they were approved, or a server could not be asked (above).")
