"""Writing to the audit trail: `audit_record` is the only way an event is made."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any, cast

from django.contrib.auth.models import AbstractBaseUser, User
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from audit.choices import ActorType, Channel, Verb
from audit.followers import interested
from audit.models import GENESIS_HASH, AuditEvent
from core.request_context import current_request_id, current_sign_in
from core.tracing import current_trace_id

# Any constant: the key of the PostgreSQL advisory lock that serialises appends to the chain.
_CHAIN_LOCK_KEY = 7_447_104_471


def _clean_text(value: str, limit: int | None = None) -> str:
    # PostgreSQL text and jsonb refuse NUL; an agent's input must not be able to make auditing fail.
    value = value.replace("\x00", "\ufffd")
    return value[:limit] if limit else value


def _clean_json(value: Any) -> Any:
    """JSON as it will read back from the database: encoder applied, NULs replaced, keys as strings."""
    if value is None:
        return None
    normalised = json.loads(json.dumps(value, cls=DjangoJSONEncoder))

    def scrub(item: Any) -> Any:
        if isinstance(item, str):
            return _clean_text(item)
        if isinstance(item, float) and not math.isfinite(item):
            return str(item)  # jsonb has no NaN or Infinity
        if isinstance(item, list):
            return [scrub(element) for element in item]
        if isinstance(item, dict):
            return {_clean_text(str(key)): scrub(element) for key, element in item.items()}
        return item

    return scrub(normalised)


def _lock_chain() -> None:
    """Serialise appends until this transaction commits, so two writers never fork the chain.

    SQLite needs nothing here: Gatehouse opens its transactions IMMEDIATE, which already holds the write lock.
    PostgreSQL appends through `_append_postgresql`, which takes the same lock inside its one statement.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])


_append_sql: tuple[str, list] | None = None


def _append_statement() -> tuple[str, list]:
    """One statement: lock the chain, read its head, draw the id and hash (audit_chain_next), insert the row.

    The function is created by migration audit/0004; see there why the chain cannot fork. Without an explicit
    transaction the statement is its own, so a lone event costs one round trip; inside the caller's transaction it
    holds the lock until that commits, like the explicit lock did.
    """
    global _append_sql
    if _append_sql is None:
        quote = connection.ops.quote_name
        fields = [f for f in AuditEvent._meta.concrete_fields if f.attname not in ("id", "prev_hash", "hash")]
        columns = ", ".join(quote(f.column) for f in fields)
        values = ", ".join(["%s"] * len(fields))
        # Only the model's own table and column names, quoted: nothing from outside goes into the text.
        sql = (
            "WITH c AS (SELECT * FROM audit_chain_next(%s, %s, %s, %s)) "  # noqa: S608
            f"INSERT INTO {quote(AuditEvent._meta.db_table)} ({quote('id')}, {columns}, {quote('prev_hash')}, "
            f"{quote('hash')}) VALUES ((SELECT out_id FROM c), {values}, (SELECT out_prev FROM c), "
            f"(SELECT out_hash FROM c)) RETURNING {quote('id')}, {quote('prev_hash')}, {quote('hash')}"
        )
        _append_sql = (sql, fields)
    return _append_sql


def _append_postgresql(event: AuditEvent) -> None:
    sql, fields = _append_statement()
    prefix, suffix = event.chained_parts()
    params: list[Any] = [_CHAIN_LOCK_KEY, GENESIS_HASH, prefix, suffix]
    params.extend(field.get_db_prep_save(getattr(event, field.attname), connection) for field in fields)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        event.pk, event.prev_hash, event.hash = cursor.fetchone()
    event._state.adding = False
    event._state.db = connection.alias


def audit_record(
    *,
    verb: Verb | str,
    actor: Any = None,
    channel: Channel | str,
    summary: str,
    system: Any = None,
    resource: str = "",
    record_id: str = "",
    proposal_id: uuid.UUID | None = None,
    input: dict[str, Any] | None = None,
    decision: dict[str, Any] | None = None,
    person: User | None = None,
    state_before: dict[str, Any] | None = None,
    state_after: dict[str, Any] | None = None,
    outcome: str = "ok",
    agent: Any = None,
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction when there is one.

    `actor` is a person (a user), an agent (governance.Agent), or None for Gatehouse itself. A person acting is also
    the event's `person` unless another person (the human in the loop) is named. `agent` names the agent an event is
    about when a person or Gatehouse acted (a proposal's execution, a kill switch), so the agent's trail shows it.
    The trail sits below the inventory and does not import it: any actor that is not a user is taken as the agent,
    and the `agent` foreign key refuses anything that is not one.

    Followers registered by the rooms above (audit/followers.py; the webhooks' outbox) are handed the event in its
    transaction when they want its verb.

    A person acting in a request of their own signed-in session has the way they signed in added to the input
    (`"sign_in": {"method": "oidc", "issuer": …}` or `{"method": "password"}`): hashed with the rest, like any input.
    """
    if isinstance(actor, AbstractBaseUser):
        sign_in = current_sign_in(actor.pk)
        if sign_in and "sign_in" not in (input or {}):
            input = {**(input or {}), "sign_in": sign_in}
    event = AuditEvent(
        occurred_at=timezone.now(),
        verb=str(verb),
        channel=str(channel),
        system=system,
        resource=_clean_text(resource, 60),
        record_id=_clean_text(str(record_id), 200),
        proposal_id=proposal_id,
        input=_clean_json(input or {}),
        decision=_clean_json(decision or {}),
        state_before=_clean_json(state_before),
        state_after=_clean_json(state_after),
        outcome=_clean_text(outcome, 60),
        request_id=current_request_id(),
        trace_id=current_trace_id(),
        summary=_clean_text(summary, 500),
        person=person,
    )
    _set_actor(event, actor, person=person, agent=agent)
    followers = interested(event.verb)
    if not followers:  # the usual case: nothing but the event itself (audit/followers.py)
        _append(event)
        return event
    # What a follower writes (a webhook's delivery rows) commits or rolls back with the event, also when the caller
    # has no transaction of its own.
    with transaction.atomic(savepoint=False):
        _append(event)
        for follower in followers:
            follower.follow(event)
    return event


def _set_actor(event: AuditEvent, actor: Any, *, person: User | None, agent: Any) -> None:
    if actor is None:
        event.actor_type, event.actor = ActorType.GATEHOUSE, "gatehouse"
    elif isinstance(actor, AbstractBaseUser):
        event.actor_type, event.actor = ActorType.HUMAN, actor.get_username()
        event.person = person or cast(User, actor)
    else:
        event.actor_type, event.actor, event.agent = ActorType.AGENT, actor.slug, actor
    if event.agent is None and agent is not None:
        event.agent = agent


def _append(event: AuditEvent) -> None:
    """Chain the event to the current head and insert it: one statement on PostgreSQL, under SQLite's write lock."""
    if connection.vendor == "postgresql":
        _append_postgresql(event)
        return
    # No savepoint: an event that cannot be written must fail the caller's whole transaction, not a part of it.
    with transaction.atomic(savepoint=False):
        _lock_chain()
        event.prev_hash = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS_HASH
        event.hash = event.compute_hash()
        event.save(force_insert=True)
