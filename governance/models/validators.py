"""Field rules the inventory's models share: slugs, currency codes, lists of names."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

slug_validator = RegexValidator(
    r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$",
    "Use lowercase letters and digits, joined by single hyphens or underscores (for example crm-staging).",
    code="invalid_slug",
)
currency_validator = RegexValidator(r"^[A-Z]{3}$", "Use a three-letter ISO 4217 currency code, such as USD.")


def validate_string_list(value: Any, what: str) -> list[str]:
    """`value` itself, once it is a list of distinct non-empty names; `what` names the list in messages."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValidationError(f"{what} must be a list of names.")
    if len(set(value)) != len(value):
        raise ValidationError(f"{what} lists a name twice.")
    return value
