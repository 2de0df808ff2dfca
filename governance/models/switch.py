"""The global stop: one switch that refuses every agent call."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords


class GlobalSwitch(models.Model):
    """The global stop: while engaged, every agent call is refused (503 system_frozen). One row, id 1."""

    engaged = models.BooleanField(default=False)
    reason = models.CharField(max_length=300, blank=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(null=True, blank=True)

    history = HistoricalRecords()

    class Meta:
        verbose_name = "global kill switch"

    def __str__(self) -> str:
        return "engaged" if self.engaged else "off"

    @classmethod
    def is_engaged(cls) -> tuple[bool, str]:
        row = cls.objects.filter(pk=1).values_list("engaged", "reason").first()
        return (bool(row[0]), row[1]) if row else (False, "")
