"""Admin for the inventory: systems and their connector settings, resources, actions, agents and tokens, grants,
threshold rules."""

from governance.admin import agents, connections, rules, systems

__all__ = ["agents", "connections", "rules", "systems"]
