"""Admin for the inventory: systems, resources, actions, agents and tokens, grants, threshold rules."""

from governance.admin import agents, rules, systems

__all__ = ["agents", "rules", "systems"]
