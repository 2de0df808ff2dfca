"""One attempt at a delivery: claim it, check the subscription and the allow-list again, sign, POST, record.

The claim is one conditional statement (waiting and due → sending, attempts + 1), so of two workers holding the same
message (acks_late redelivery, the sweeper's republish) one sends and the other returns. Nothing is locked while the
receiver answers. A 2xx answer delivers; anything else (an error status, a redirect, which is never followed, a
timeout, a refused address) is retried with exponential backoff until `retry_until`, then the delivery is parked for
an operator to replay. The receiver's body is kept only as a short excerpt with the secret taken out.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from connectors.credentials import CredentialUndecryptable, decrypt
from connectors.errors import Redactor
from webhooks.addresses import url_refusal
from webhooks.choices import WAITING_STATUSES, DeliveryStatus
from webhooks.events import matches, payload
from webhooks.models import Delivery, Subscription
from webhooks.signing import headers

logger = logging.getLogger(__name__)

EXCERPT_CHARS = 200
_READ_AT_MOST = 4096  # bytes of the receiver's answer read at all
USER_AGENT = "Gatehouse-Webhooks/1"


@dataclass(frozen=True)
class Outcome:
    """What the attempt came to; `retry_in`: publish the delivery again that many seconds from now."""

    status: str
    retry_in: float | None = None


@dataclass(frozen=True)
class _Answer:
    delivered: bool
    status_code: int | None = None
    error: str = ""
    excerpt: str = ""


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling from GATEHOUSE_WEBHOOK_BACKOFF, capped at
    GATEHOUSE_WEBHOOK_BACKOFF_MAX, with jitter downwards so receivers coming back are not hit by every retry at once."""
    base = settings.GATEHOUSE_WEBHOOK_BACKOFF.total_seconds()
    cap = settings.GATEHOUSE_WEBHOOK_BACKOFF_MAX.total_seconds()
    delay = min(base * 2 ** max(attempts - 1, 0), cap)
    return delay * random.uniform(0.75, 1.0)  # noqa: S311 - jitter, not a secret


def delivery_attempt(*, delivery_id: int) -> Outcome:
    """Send one delivery once, if it is waiting and due; what came of it."""
    now = timezone.now()
    claimed = Delivery.objects.filter(pk=delivery_id, status__in=WAITING_STATUSES, next_attempt_at__lte=now).update(
        status=DeliveryStatus.SENDING, claimed_at=now, attempts=F("attempts") + 1
    )
    if not claimed:
        return _not_claimed(delivery_id, now)
    delivery = Delivery.objects.select_related("subscription", "event__agent", "event__system").get(pk=delivery_id)
    subscription = delivery.subscription
    if not subscription.active or not matches(subscription.event_types or [], delivery.event_type):
        _record(
            delivery, now, status=DeliveryStatus.CANCELLED, error="The subscription is off or no longer wants this."
        )
        return Outcome(DeliveryStatus.CANCELLED)
    answer = _send(delivery, subscription, now)
    if answer.delivered:
        _record(delivery, now, status=DeliveryStatus.DELIVERED, answer=answer)
        return Outcome(DeliveryStatus.DELIVERED)
    delay = retry_delay(delivery.attempts)
    if now + timedelta(seconds=delay) > delivery.retry_until:
        _record(delivery, now, status=DeliveryStatus.PARKED, answer=answer)
        logger.warning(
            "webhooks: delivery %s to subscription %s parked after %s attempt(s): %s",
            delivery.pk,
            subscription.pk,
            delivery.attempts,
            answer.error,
        )
        return Outcome(DeliveryStatus.PARKED)
    _record(delivery, now, status=DeliveryStatus.RETRYING, answer=answer, next_at=now + timedelta(seconds=delay))
    return Outcome(DeliveryStatus.RETRYING, retry_in=delay)


def _not_claimed(delivery_id: int, now: datetime) -> Outcome:
    """Someone else has it, it is finished, or it is not due yet (a capped countdown arrived early: wait on)."""
    row = Delivery.objects.filter(pk=delivery_id).values("status", "next_attempt_at").first()
    if row is None:
        return Outcome("missing")
    if row["status"] in WAITING_STATUSES and row["next_attempt_at"] > now:
        return Outcome("early", retry_in=(row["next_attempt_at"] - now).total_seconds())
    return Outcome("duplicate")


def _secrets(subscription: Subscription, now: datetime) -> list[str]:
    """The secret, and the one before it while its overlap lasts (both signatures go out)."""
    found = [decrypt(subscription.ciphertext)]
    if subscription.previous_ciphertext and subscription.previous_until and subscription.previous_until > now:
        found.append(decrypt(subscription.previous_ciphertext))
    return found


def _send(delivery: Delivery, subscription: Subscription, now: datetime) -> _Answer:
    refusal = url_refusal(subscription.url)
    if refusal:
        return _Answer(False, error=f"Not sent: {refusal}"[:300])
    try:
        in_use = _secrets(subscription, now)
    except CredentialUndecryptable:
        return _Answer(False, error="Not sent: the secret cannot be decrypted with GATEHOUSE_CREDENTIAL_KEYS.")
    body = json.dumps(payload(delivery.event, delivery.event_type), separators=(",", ":"), ensure_ascii=True)
    sent_headers = {
        **headers(message_id=delivery.message_id, body=body, secrets_in_use=in_use, at=timezone.now()),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    timeout = settings.GATEHOUSE_WEBHOOK_TIMEOUT.total_seconds()
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False) as client,
            client.stream("POST", subscription.url, content=body.encode(), headers=sent_headers) as response,
        ):
            excerpt = _excerpt(response, Redactor(in_use))
            code = response.status_code
    except httpx.TimeoutException:
        return _Answer(False, error=f"No answer within {timeout:g} s.")
    except httpx.HTTPError as exc:
        # The exception's words can quote the request: only its kind is kept.
        return _Answer(False, error=f"Could not reach the receiver ({type(exc).__name__}).")
    if 200 <= code < 300:
        return _Answer(True, status_code=code, excerpt=excerpt)
    what = "redirected (not followed)" if 300 <= code < 400 else "answered"
    return _Answer(False, status_code=code, error=f"The receiver {what} {code}.", excerpt=excerpt)


def _excerpt(response: httpx.Response, redact: Redactor) -> str:
    """The first words of the receiver's answer, the secret and credential headers taken out, on one line."""
    read = b""
    for chunk in response.iter_bytes():
        read += chunk
        if len(read) >= _READ_AT_MOST:
            break
    text = redact(read[:_READ_AT_MOST].decode("utf-8", "replace"))
    text = re.sub(r"\s+", " ", text).strip()
    return text[:EXCERPT_CHARS]


def _record(
    delivery: Delivery,
    claimed_at: datetime,
    *,
    status: str,
    answer: _Answer | None = None,
    error: str = "",
    next_at: datetime | None = None,
) -> None:
    """The attempt's result, on the claim it was made under (a claim the sweeper took back meanwhile is not
    overwritten: that delivery is someone else's now)."""
    now = timezone.now()
    changes: dict = {"status": status, "claimed_at": None, "last_error": (answer.error if answer else error)[:300]}
    if answer is not None:
        changes.update(last_status_code=answer.status_code, response_excerpt=answer.excerpt)
    if status == DeliveryStatus.DELIVERED:
        changes["delivered_at"] = now
    if next_at is not None:
        changes["next_attempt_at"] = next_at
    Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING, claimed_at=claimed_at).update(**changes)
