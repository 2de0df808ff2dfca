"""Choices for connector models."""

from django.db import models


class CredentialKind(models.TextChoices):
    BEARER = "bearer", "Bearer token (Authorization header)"
    HEADER = "header", "API key in a named header"
    BASIC = "basic", "HTTP basic (username + password)"


class BatchFileStatus(models.TextChoices):
    PROCESSED = "processed", "Processed"
    REJECTED = "rejected", "Rejected (set aside whole)"
    DUPLICATE = "duplicate", "Duplicate (already processed)"
