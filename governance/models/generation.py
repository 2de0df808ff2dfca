"""The policy generation: one row whose value changes, in the same transaction, whenever anything an agent call is
checked against changes (governance/policy_cache.py keeps those facts per process and asks this row once a call)."""

from __future__ import annotations

from django.db import models


class PolicyGeneration(models.Model):
    """One row, id 1. Database triggers (governance/policy_triggers.py) set a new random value on every insert, update
    or delete of a watched table, so the change and the new value commit (or roll back) together; a value is never
    drawn twice, so an entry cached under a rolled-back value can never match again."""

    value = models.CharField(max_length=32)

    class Meta:
        verbose_name = "policy generation"

    def __str__(self) -> str:
        return self.value
