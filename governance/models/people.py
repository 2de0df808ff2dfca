"""People's accounts at the company's identity provider: which Gatehouse user a provider's subject signs in as."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class PersonIdentity(models.Model):
    """One person at one identity provider (`issuer`), bound to one Gatehouse user for good.

    The provider's `sub` is the only key: stable and never reassigned by the provider, unlike an e-mail address, which
    changes and can be given to someone else. So a sign-in finds its user by (issuer, subject) alone, and a changed or
    reused e-mail can never make it someone else's account.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="identities")
    issuer = models.CharField(max_length=300)
    subject = models.CharField(max_length=255)
    first_signed_in = models.DateTimeField(auto_now_add=True)
    last_signed_in = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "person identities"
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="identity_one_user_per_subject"),
        ]

    def __str__(self) -> str:
        return f"{self.user} at {self.issuer}"
