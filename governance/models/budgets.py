"""Per-agent budgets on a system: how much an agent may change, and how often, in a window, before a person decides."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from simple_history.models import HistoricalRecords

from governance.models.agents import Agent
from governance.models.rules import DEFAULT_WINDOW
from governance.models.systems import System
from governance.models.validators import currency_validator
from governance.querysets import OwnedQuerySet


class AgentBudget(models.Model):
    """A budget of one agent on one system: at most `max_amount` (the sum of the |impact| of its proposals in
    `currency`) and at most `max_writes` proposals in the window. A proposal that would go past either does not
    auto-execute: a person approves it. Nothing else changes (what a rule sends to a person still goes there).

    Which proposals count: those still standing in the window (approvals.choices.COUNTS_TOWARDS_LIMITS), the same set
    as a rule's cumulative limits. Edited by the agent's owner or a superuser (governance.services.agent_budget_save).
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="budgets")
    system = models.ForeignKey(System, on_delete=models.CASCADE, related_name="agent_budgets")
    window = models.DurationField(default=DEFAULT_WINDOW, help_text="e.g. 1 day, 0:00:00 for 24 hours.")
    max_amount = models.DecimalField(
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="The sum of the size of its proposals' impacts in the window; empty: no limit on money.",
    )
    currency = models.CharField(max_length=3, default="USD", validators=[currency_validator])
    max_writes = models.PositiveIntegerField(
        null=True, blank=True, help_text="How many proposals in the window; empty: no limit on the count."
    )

    history = HistoricalRecords()
    objects = OwnedQuerySet.as_manager()

    OWNER_PATH = "agent__owner"

    class Meta:
        ordering = ["agent__slug", "system__slug"]
        constraints = [models.UniqueConstraint(fields=["agent", "system"], name="budget_one_per_agent_system")]

    def __str__(self) -> str:
        return f"{self.agent} on {self.system}"

    def clean(self) -> None:
        if self.window is not None and self.window <= timedelta(0):
            raise ValidationError({"window": "The window must be longer than zero."})
        if self.max_amount is None and self.max_writes is None:
            raise ValidationError("Set a maximum amount, a maximum number of writes, or both.")
