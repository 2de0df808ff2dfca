"""The inventory: systems, resources, actions, agents and their tokens, scope grants, threshold rules."""
