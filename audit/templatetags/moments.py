"""`{% load moments %}`: `{{ event.occurred_at|moment }}` and `{{ day|day }}` write times as core.moments does."""

from __future__ import annotations

from datetime import date, datetime

from django import template

from core.moments import day_text
from core.moments import moment as moment_text

register = template.Library()


@register.filter
def moment(value: datetime | None) -> str:
    return moment_text(value)


@register.filter
def day(value: date | datetime | None) -> str:
    return day_text(value)
