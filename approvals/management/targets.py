"""What the rollback commands act on: `--agent A` or `--system S`, looked up by slug."""

from __future__ import annotations

from django.core.management.base import CommandError

from governance.models import Agent, System


def agent_or_system(options: dict) -> tuple[Agent | None, System | None]:
    """The agent and the system named by `--agent` / `--system` (either may be None); unknown slugs are refused."""
    agent = system = None
    if options.get("agent"):
        agent = Agent.objects.filter(slug=options["agent"]).first()
        if agent is None:
            raise CommandError(f"No agent {options['agent']!r}.")
    if options.get("system"):
        system = System.objects.filter(slug=options["system"]).first()
        if system is None:
            raise CommandError(f"No system {options['system']!r}.")
    return agent, system
