"""The inventory: systems, their resources and actions, agents and their tokens, scope grants, threshold rules, and
the global stop. One module per subject; every model is importable from here, as Django and the rest of the code
expect (`from governance.models import System`)."""

from governance.models.agents import Agent, AgentToken, ScopeGrant
from governance.models.budgets import AgentBudget
from governance.models.generation import PolicyGeneration
from governance.models.people import PersonIdentity
from governance.models.rules import (
    BandSpec,
    ThresholdBand,
    ThresholdRule,
    condition_words,
    ladder_lower_bounds,
    validate_bands,
    validate_condition,
)
from governance.models.switch import GlobalSwitch
from governance.models.systems import ActionType, Resource, System, SystemConnection
from governance.models.validators import currency_validator, slug_validator

__all__ = [
    "ActionType",
    "Agent",
    "AgentBudget",
    "AgentToken",
    "BandSpec",
    "GlobalSwitch",
    "PersonIdentity",
    "PolicyGeneration",
    "Resource",
    "ScopeGrant",
    "System",
    "SystemConnection",
    "ThresholdBand",
    "ThresholdRule",
    "condition_words",
    "currency_validator",
    "ladder_lower_bounds",
    "slug_validator",
    "validate_bands",
    "validate_condition",
]
