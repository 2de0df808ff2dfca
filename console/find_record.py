"""Find a record, for auditors: a system and a record id (or "crm 4471" typed whole) → that record's timeline.

The form is on the auditor's home page (console/dashboard) and on its own page (console/timeline.find_record_view),
where a mistake is explained: a system that does not exist, an id that cannot be one, or an id that several systems
hold (crm 4471 and crm-staging 4471 are two records, never mixed).
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.urls import reverse

from audit.models import AuditEvent
from governance.models import System

RECORD_ID_MAX = AuditEvent._meta.get_field("record_id").max_length or 200
# Tabs, line breaks and other control characters are never part of a record id someone types on purpose.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SYSTEMS_LISTED = 20  # systems named in a message; the select lists them all


class FindRecordForm(forms.Form):
    """A system (optional: "any system") and a record id; "crm 4471" typed in the id box names the system too."""

    system = forms.ChoiceField(required=False, label="System")
    record = forms.CharField(
        label="Record id",
        max_length=RECORD_ID_MAX,
        error_messages={
            "required": "Type the record's id, for example 4471.",
            "max_length": f"A record id has at most {RECORD_ID_MAX} characters; this one has %(show_value)d.",
            "null_characters_not_allowed": "A record id has no control characters (a tab, a line break, a NUL).",
        },
        widget=forms.TextInput(attrs={"placeholder": "4471", "size": 14, "autocomplete": "off"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slugs = list(System.objects.order_by("slug").values_list("slug", "name"))
        field = self.fields["system"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [("", "Any system"), *((slug, f"{slug} ({name})") for slug, name in self.slugs)]
        names = ", ".join(slug for slug, _ in self.slugs[:SYSTEMS_LISTED])
        more = f" and {len(self.slugs) - SYSTEMS_LISTED} more" if len(self.slugs) > SYSTEMS_LISTED else ""
        field.error_messages["invalid_choice"] = f"There is no system “%(value)s”. The systems are: {names}{more}."

    def clean_record(self) -> str:
        record = self.cleaned_data["record"]
        if _CONTROL.search(record):
            raise forms.ValidationError(self.fields["record"].error_messages["null_characters_not_allowed"])
        return record

    def clean(self) -> dict[str, Any]:
        """With no system chosen, "crm 4471" in the id box: the first word is the system when it names one."""
        cleaned = super().clean() or {}
        record = cleaned.get("record") or ""
        if not cleaned.get("system") and " " in record:
            first, rest = record.split(None, 1)
            if first in {slug for slug, _ in self.slugs} and rest.strip():
                cleaned["system"], cleaned["record"] = first, rest.strip()
        return cleaned


def systems_holding(record_id: str, *, besides: System | None = None) -> list[System]:
    """The systems with at least one event about `record_id` (at most SYSTEMS_LISTED, by slug), `besides` left out."""
    holders = AuditEvent.objects.systems_with_record(record_id)
    if besides is not None:
        holders = holders.exclude(pk=besides.pk)
    return list(holders[:SYSTEMS_LISTED])


def record_timeline_url(system_slug: str, record_id: str) -> str:
    return reverse("admin:audit_timeline", args=[system_slug, record_id])
