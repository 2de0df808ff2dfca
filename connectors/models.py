"""Vaulted connector credentials: the agent never holds one; the admin can set a secret but never read it."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import DateTimeField, ExpressionWrapper, F
from django.utils import timezone
from simple_history.models import HistoricalRecords

from connectors import credentials
from connectors.choices import BatchFileStatus, CredentialKind
from governance import policy_cache
from governance.querysets import OwnedQuerySet

# Owners hear of a rotation this long before it is due; the admin home lists it and the readiness checklist notes it
# from then on. One horizon for all three, so the e-mail, the list and the checklist agree.
ROTATION_NOTICE = timedelta(days=14)


class CredentialQuerySet(OwnedQuerySet):
    def rotation_due(self, now: datetime) -> CredentialQuerySet:
        """Credentials overdue for rotation or due within ROTATION_NOTICE of `now`, each annotated with `due_at`."""
        due_at = ExpressionWrapper(F("last_rotated_at") + F("rotation_interval"), output_field=DateTimeField())
        return self.annotate(due_at=due_at).filter(rotation_interval__isnull=False, due_at__lte=now + ROTATION_NOTICE)


class VaultedSecret(models.Model):
    """A secret Gatehouse sends to a system, encrypted at rest, and how it is sent and rotated.

    Only `ciphertext` holds the secret, and each concrete model excludes it from history, so a database dump holds
    no readable secret and no stale copy of an old one.
    """

    kind = models.CharField(max_length=10, choices=CredentialKind.choices, default=CredentialKind.BEARER)
    header_name = models.CharField(max_length=60, blank=True, help_text="For API keys: the header that carries it.")
    username = models.CharField(max_length=150, blank=True, help_text="For HTTP basic: the user name.")
    ciphertext = models.TextField(editable=False)
    key_fingerprint = models.CharField(max_length=12, editable=False, help_text="Which vault key encrypted it.")
    is_admin_level = models.BooleanField(default=False, help_text="Has more rights than Gatehouse's actions need.")
    rotation_interval = models.DurationField(default=timedelta(days=90))
    last_rotated_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CredentialQuerySet.as_manager()

    OWNER_PATH = "system__owner"

    class Meta:
        abstract = True

    def clean(self) -> None:
        if self.kind == CredentialKind.HEADER and not self.header_name:
            raise ValidationError({"header_name": "Name the header that carries the API key."})
        if self.kind == CredentialKind.BASIC and not self.username:
            raise ValidationError({"username": "HTTP basic needs a user name."})
        if self.rotation_interval is not None and self.rotation_interval <= timedelta(0):
            raise ValidationError({"rotation_interval": "The rotation interval must be longer than zero."})

    def encrypt_secret(self, secret: str) -> None:
        if not secret:
            raise ValidationError("The secret is empty.")
        self.ciphertext = credentials.encrypt(secret)
        self.key_fingerprint = credentials.primary_key_fingerprint()

    def reveal(self) -> str:
        """The plain secret, for a connector about to call the system. Never log or return it."""
        return credentials.decrypt(self.ciphertext)

    @property
    def rotation_due_at(self) -> datetime:
        return self.last_rotated_at + self.rotation_interval

    def rotation_state(self, now: datetime | None = None) -> str:
        """ "overdue", "due soon" (within ROTATION_NOTICE) or "" — the one place rotation is judged."""
        now = now or timezone.now()
        if now >= self.rotation_due_at:
            return "overdue"
        return "due soon" if self.rotation_due_at <= now + ROTATION_NOTICE else ""

    @property
    def rotation_overdue(self) -> bool:
        return self.rotation_state() == "overdue"

    @property
    def holder(self):
        """The agent whose own credential this is; None for the system's shared one."""
        return None


class Credential(VaultedSecret):
    """The system's shared service credential: what every agent without one of its own is served with."""

    system = models.OneToOneField("governance.System", on_delete=models.CASCADE, related_name="credential")
    is_shared = models.BooleanField(default=False, help_text="Also used by people or other software.")

    history = HistoricalRecords(excluded_fields=["ciphertext"])

    class Meta:
        ordering = ["system__slug"]

    def __str__(self) -> str:
        return f"credential for {self.system}"


class AgentCredential(VaultedSecret):
    """One agent's own account at a system: its reads and writes there are made with it, so the system's own logs
    name the agent rather than a shared service account (the seed article's first rule)."""

    system = models.ForeignKey("governance.System", on_delete=models.CASCADE, related_name="agent_credentials")
    agent = models.ForeignKey("governance.Agent", on_delete=models.CASCADE, related_name="credentials")

    history = HistoricalRecords(excluded_fields=["ciphertext"])

    class Meta:
        ordering = ["system__slug", "agent__slug"]
        constraints = [models.UniqueConstraint(fields=["system", "agent"], name="agent_credential_one_per_system")]

    def __str__(self) -> str:
        return f"credential of {self.agent} for {self.system}"

    @property
    def holder(self):
        return self.agent


def credential_for(system, agent=None) -> Credential | AgentCredential | None:
    """The credential a connector for `system` uses on `agent`'s behalf: the agent's own when it has one, else the
    system's shared one (None when the system has neither, or is not saved yet)."""
    if not system.pk:
        return None
    if agent is not None:
        key = ("agent_credential", system.pk, agent.pk)
        own = policy_cache.cached(key, lambda: AgentCredential.objects.filter(system=system, agent=agent).first())
        if own is not None:
            return own
    return getattr(system, "credential", None)


class Event(models.Model):
    """A record change reported by an event-queue (legacy batch) system, for agents to read in order.

    One row per (system, key): a file delivered twice, or a row repeated, does not make a second event.
    """

    system = models.ForeignKey("governance.System", on_delete=models.PROTECT, related_name="events")
    resource = models.ForeignKey("governance.Resource", on_delete=models.PROTECT, related_name="events")
    key = models.CharField(max_length=300, help_text="Unique per system: record and version.")
    record_id = models.CharField(max_length=200)
    data = models.JSONField()
    source = models.CharField(max_length=300, blank=True, help_text="The file (and row) it came from.")
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["system", "key"], name="event_unique_key_per_system")]

    def __str__(self) -> str:
        return f"{self.system_id}:{self.key}"


class BatchFile(models.Model):
    """One file taken from a batch system's drop folder, and what became of it.

    A content hash is processed once per system (`batch_file_processed_once`): the same bytes arriving again get a
    `duplicate` row and make no events. A `rejected` file (bad header, empty, unreadable) made no events either.
    """

    system = models.ForeignKey("governance.System", on_delete=models.PROTECT, related_name="batch_files")
    name = models.CharField(max_length=255, help_text="The file's name in the drop folder.")
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField(help_text="Bytes.")
    status = models.CharField(max_length=20, choices=BatchFileStatus.choices)
    reason = models.CharField(max_length=500, blank=True, help_text="Why the file was set aside whole.")
    duplicate_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    rows_read = models.PositiveIntegerField(default=0)
    events_created = models.PositiveIntegerField(default=0)
    rows_duplicate = models.PositiveIntegerField(default=0, help_text="Rows already recorded as events, same values.")
    rows_quarantined = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    moved_to = models.CharField(max_length=500, blank=True, help_text="Where the file was moved after processing.")

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["system", "sha256"],
                condition=models.Q(status=BatchFileStatus.PROCESSED),
                name="batch_file_processed_once",
            )
        ]

    def __str__(self) -> str:
        return f"{self.system_id}:{self.name} ({self.status})"


class QuarantinedRow(models.Model):
    """A row of a processed file that made no event, with the reason: nothing is dropped silently."""

    file = models.ForeignKey(BatchFile, on_delete=models.PROTECT, related_name="quarantined_rows")
    line = models.PositiveIntegerField(help_text="Line number in the file (the first line of a multi-line row).")
    raw = models.TextField(help_text="The row as it stood in the file; undecodable bytes shown as \\xNN.")
    reason = models.CharField(max_length=500)

    class Meta:
        ordering = ["file_id", "line"]

    def __str__(self) -> str:
        return f"{self.file.name} line {self.line}: {self.reason}"


class BatchPoll(models.Model):
    """A batch system's polling state: when it was last polled, what went wrong, and who is polling it now.

    The claim (`claimed_by` until `claimed_until`) is taken by a conditional UPDATE, which works the same on
    PostgreSQL and SQLite and needs no transaction held open across a whole poll; a poller that dies loses its
    claim when the lease runs out.
    """

    system = models.OneToOneField("governance.System", on_delete=models.CASCADE, related_name="batch_poll")
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    claimed_by = models.CharField(max_length=64, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["system__slug"]

    def __str__(self) -> str:
        return f"polling of {self.system}"
