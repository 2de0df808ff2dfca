"""The outbox: a delivery row per matching subscription, written in the audit event's own transaction, published to a
worker after the commit; a periodic sweep publishes again whatever no worker took up.

`audit_record` is on every hot path, so the trail asks this follower (audit/followers.py) whether it wants a verb
and the answer comes from memory: the active subscriptions, read at most once per GATEHOUSE_WEBHOOK_REFRESH per process
and forgotten at once by the process that changes one. With no subscription an event costs no query at all; a new
subscription reaches the other processes within that time. What memory says is checked again by the one statement
that writes the deliveries (INSERT … SELECT from the subscriptions still active), so a subscription switched off or
gone meanwhile gets nothing and can never fail the event's transaction; the worker checks once more before sending.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit.models import AuditEvent
from core.tasks import queue_task
from webhooks.choices import WAITING_STATUSES, DeliveryStatus
from webhooks.events import TYPES, event_type, matches
from webhooks.models import Delivery, Subscription

logger = logging.getLogger(__name__)

DELIVER_TASK = "webhooks.deliver"  # the task's stable name (webhooks/tasks.py)


# --- What this process knows of the subscriptions ----------------------------------------------------------------


@dataclass(frozen=True)
class _Known:
    until: float  # time.monotonic() after which it is read again
    by_type: dict[str, tuple[int, ...]]  # event type → ids of the active subscriptions that want it


_known: _Known | None = None
_loading = threading.Lock()


def forget_subscriptions() -> None:
    """Read the subscriptions again at the next event (after a change made by this process; tests)."""
    global _known
    _known = None


def _subscribers(type_name: str) -> tuple[int, ...]:
    known = _known
    if known is None or time.monotonic() >= known.until:
        known = _load()
    return known.by_type.get(type_name, ())


def _load() -> _Known:
    global _known
    with _loading:
        try:
            # A savepoint: a table not there yet (a data migration writing events before ours ran) must not abort the
            # caller's transaction; it reads as "no subscriptions".
            with transaction.atomic():
                rows = list(Subscription.objects.filter(active=True).values_list("pk", "event_types"))
        except DatabaseError:
            rows = []
        by_type = {name: tuple(pk for pk, patterns in rows if matches(patterns or [], name)) for name in TYPES}
        refresh = settings.GATEHOUSE_WEBHOOK_REFRESH.total_seconds()
        _known = _Known(until=time.monotonic() + refresh, by_type={k: v for k, v in by_type.items() if v})
        return _known


class WebhookFollower:
    """Registered with the trail when Django starts (webhooks/apps.py)."""

    def wants(self, verb: str) -> bool:
        type_name = event_type(verb)
        return type_name is not None and bool(_subscribers(type_name))

    def follow(self, event: AuditEvent) -> None:
        type_name = event_type(event.verb)
        if type_name is None:
            return
        ids = _insert(event, type_name, _subscribers(type_name))
        if ids:
            transaction.on_commit(lambda: publish(ids))


FOLLOWER = WebhookFollower()


# --- Writing the deliveries --------------------------------------------------------------------------------------

_INSERT_COLUMNS = (
    "subscription_id",
    "event_id",
    "event_type",
    "status",
    "attempts",
    "created_at",
    "next_attempt_at",
    "retry_until",
    "last_error",
    "response_excerpt",
    "replays",
)


def _insert(event: AuditEvent, type_name: str, subscription_ids: tuple[int, ...]) -> list[int]:
    """One statement: a pending delivery for each of `subscription_ids` still active; their ids."""
    if not subscription_ids:
        return []
    quote = connection.ops.quote_name
    now = timezone.now()
    values: dict[str, Any] = {
        "event_id": event.pk,
        "event_type": type_name,
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
        "retry_until": now + settings.GATEHOUSE_WEBHOOK_RETRY_FOR,
        "last_error": "",
        "response_excerpt": "",
        "replays": 0,
    }
    fields = {field.attname: field for field in Delivery._meta.concrete_fields}
    params = [fields[name].get_db_prep_save(value, connection) for name, value in values.items()]
    columns = ", ".join(quote(name) for name in _INSERT_COLUMNS)
    placeholders = ", ".join(["%s"] * len(values))
    ids = ", ".join(["%s"] * len(subscription_ids))
    # Only the models' own table and column names, quoted, go into the text; every value is a parameter.
    sql = (
        f"INSERT INTO {quote(Delivery._meta.db_table)} ({columns}) "  # noqa: S608
        f"SELECT s.{quote('id')}, {placeholders} FROM {quote(Subscription._meta.db_table)} s "
        f"WHERE s.{quote('id')} IN ({ids}) AND s.{quote('active')} = %s RETURNING {quote('id')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *subscription_ids, True])
        return [row[0] for row in cursor.fetchall()]


# --- Publishing ------------------------------------------------------------------------------------------------


def publish(delivery_ids: list[int], *, countdown: float | None = None) -> int:
    """Hand deliveries to the workers. A broker that is down is logged, not raised: the sweeper publishes later."""
    published = 0
    for delivery_id in delivery_ids:
        try:
            queue_task(DELIVER_TASK, args=[delivery_id], countdown=countdown)
        except Exception as exc:  # any broker failure: the row waits for the sweeper
            logger.warning("webhooks: publishing delivery %s failed: %s", delivery_id, exc)
            continue
        published += 1
    return published


def publish_later(delivery_id: int, delay: float) -> None:
    """The next attempt, `delay` seconds from now; capped below the broker's visibility timeout (a longer countdown
    would have Redis hand the message to a second worker): arriving early, the task finds it not due and waits on."""
    publish([delivery_id], countdown=min(delay, settings.GATEHOUSE_BROKER_VISIBILITY_TIMEOUT * 0.8))


def delivery_lease() -> timedelta:
    """A claim older than this belongs to a worker that died: the hard time limit has stopped any task by then."""
    return timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 5)


def deliveries_sweep(now: datetime | None = None) -> int:
    """Take back attempts whose worker died, and publish again deliveries due for longer than the republish margin
    (never published: the broker was down; or their message was lost). Duplicates are harmless: the claim lets one
    worker through."""
    now = now or timezone.now()
    Delivery.objects.filter(status=DeliveryStatus.SENDING, claimed_at__lt=now - delivery_lease()).update(
        status=DeliveryStatus.RETRYING,
        next_attempt_at=now,
        claimed_at=None,
        last_error="The worker stopped during the attempt.",
    )
    due = Delivery.objects.filter(
        status__in=WAITING_STATUSES, next_attempt_at__lt=now - settings.GATEHOUSE_OUTBOX_REPUBLISH_AFTER
    )
    ids = list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:500])
    return publish(ids) if ids else 0
