"""Reading numbers that arrive as JSON: amounts are decimal strings, and a number that is not one is not one."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any


def finite_decimal(value: Any) -> Decimal | None:
    """`value` as a finite Decimal ("2000.00", 2000, 2000.5), or None (booleans, None, text, NaN, infinity)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None
