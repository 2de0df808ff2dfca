"""Stop or resume an agent, the writes to a system, or everything."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from approvals.killswitch import SwitchTarget, kill_switch_off, kill_switch_on
from approvals.management.targets import agent_or_system
from audit.choices import Channel


class Command(BaseCommand):
    help = (
        "Turn the kill switch on or off for one agent (--agent), the writes to one system (--system), or, with "
        "neither, every agent. Effective on the next request; pending proposals are held, and released when off."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("position", choices=["on", "off"])
        target = parser.add_mutually_exclusive_group()
        target.add_argument("--agent", help="An agent's slug.")
        target.add_argument("--system", help="A system's slug: its writes are frozen.")
        parser.add_argument("--reason", required=True, help="Why (kept in the audit trail).")

    def handle(self, *args, **options) -> None:
        agent, system = agent_or_system(options)
        switch = kill_switch_on if options["position"] == "on" else kill_switch_off
        try:
            result = switch(
                target=SwitchTarget(agent=agent, system=system), reason=options["reason"], channel=Channel.COMMAND
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(result.message)
