"""The Slack door: Approve and Reject clicks, and the reject modal's reason, POSTed by Slack to
/integrations/slack/interactions as a form with one field, `payload` (JSON).

Nothing in a request is believed before it is verified as Slack's docs say ("Verifying requests from Slack"): the
X-Slack-Request-Timestamp within five minutes of our clock (an older one is a replay, or a clock far off), then the
X-Slack-Signature, v0=HMAC-SHA256 of "v0:{timestamp}:{raw body}" with our signing secret (slack_sdk's
SignatureVerifier). A request that fails is answered 401 and audited as `denied` with what is known of it (address,
timestamp, size and SHA-256 of the body), never the unverified body itself.

A verified click is a person deciding: the Slack user is mapped to a Gatehouse person by confirmed e-mail
(approvals/slack/messages.py), then the same decision services as every other door run (approvals.decisions), so
separation of duties, the SLA, expiry and the stale check apply as they do in the admin. Each refusal is audited and
told to the person who clicked only (an ephemeral message; in the modal, an error under the reason), and the message
everyone sees is updated with the outcome once it commits (approvals/slack/later.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from slack_sdk.signature import Clock, SignatureVerifier

from approvals.decisions import NotYourDecision, decision_refused, proposal_approve, proposal_reject
from approvals.freshness import RecordMoved
from approvals.models import Proposal
from approvals.slack import slack_enabled
from approvals.slack.blocks import APPROVE, REASON_BLOCK, REJECT, REJECT_MODAL, reject_modal
from approvals.slack.messages import SlackPerson, slack_ephemeral, slack_open_modal, slack_person
from approvals.transitions import InvalidTransition
from audit.choices import Channel, Verb
from audit.services import audit_record

logger = logging.getLogger(__name__)

MAX_AGE = 5 * 60  # seconds: Slack's docs, and slack_sdk's SignatureVerifier
UNVERIFIED_AUDITED_PER_MINUTE = 30  # past this, a flood of forged requests is logged, not appended to the chain
STEP = {APPROVE: "approve", REJECT: "reject"}


class _At(Clock):
    """The verifier's clock, stopped at the instant of our own timestamp check."""

    def __init__(self, now: float) -> None:
        self.moment = now

    def now(self) -> float:
        return self.moment


def signature_problem(*, body: bytes, timestamp: str, signature: str, now: float | None = None) -> str:
    """ "" when the request was signed with our signing secret less than five minutes ago; otherwise why not, as the
    trail's outcome: `stale_timestamp` (checked first, so a replayed request is named as one) or `bad_signature`."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return "bad_signature"
    now = time.time() if now is None else now
    if abs(now - sent) > MAX_AGE:
        return "stale_timestamp"
    if not settings.GATEHOUSE_SLACK_SIGNING_SECRET:
        return "bad_signature"  # no secret, no proof: nothing verifies
    verifier = SignatureVerifier(settings.GATEHOUSE_SLACK_SIGNING_SECRET, clock=_At(now))
    try:
        valid = verifier.is_valid(body=body, timestamp=timestamp, signature=signature)
    except (UnicodeDecodeError, TypeError):  # a body that is not UTF-8, a signature that is not ASCII
        valid = False
    return "" if valid else "bad_signature"


@csrf_exempt  # Slack cannot send our CSRF token: the signature is what proves the request is Slack's
@require_POST
def interactions(request: HttpRequest) -> HttpResponse:
    if not slack_enabled():
        return HttpResponse(status=404)
    body = request.body
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    problem = signature_problem(body=body, timestamp=timestamp, signature=request.headers.get("X-Slack-Signature", ""))
    if problem:
        _audit_unverified(request, body=body, timestamp=timestamp, problem=problem)
        return HttpResponse("The request is not signed by Slack.", status=401, content_type="text/plain")
    try:
        payload = json.loads(parse_qs(body.decode())["payload"][0])
        kind = payload["type"]
    except (UnicodeDecodeError, KeyError, IndexError, TypeError, ValueError):
        return HttpResponse(status=400)
    if kind == "block_actions":
        return _clicked(payload)
    if kind == "view_submission":
        return _submitted(payload)
    return HttpResponse(status=200)  # anything else Slack sends this app: nothing to do


def unverified_counter(at: float) -> str:
    """The cache key counting the unverified requests audited in the minute of `at` (every web process shares it)."""
    return f"slack:unverified:{int(at // 60)}"


def _audit_unverified(request: HttpRequest, *, body: bytes, timestamp: str, problem: str) -> None:
    minute = unverified_counter(time.time())
    try:
        cache.add(minute, 0, timeout=120)
        count = cache.incr(minute)
    except Exception:  # the cache down: audit anyway
        count = 0
    if count > UNVERIFIED_AUDITED_PER_MINUTE:
        logger.warning("slack: refused an unverified request (%s); audit cap reached this minute", problem)
        return
    if problem == "stale_timestamp":
        why = f"its timestamp ({timestamp[:20]}) is more than five minutes away from ours: a replay, or a clock far off"
    else:
        why = "its signature does not match our signing secret: it is not from Slack, or it was altered"
    audit_record(
        verb=Verb.DENIED,
        actor=None,
        channel=Channel.SLACK,
        outcome=problem,
        input={
            "remote_addr": request.META.get("REMOTE_ADDR", ""),
            "timestamp": timestamp[:20],
            "signed": bool(request.headers.get("X-Slack-Signature")),
            "body_bytes": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        },
        summary=f"A request to the Slack interactions endpoint was refused: {why}.",
    )


def _who(payload: dict[str, Any]) -> tuple[str, str]:
    user = payload.get("user") or {}
    return str(user.get("id", ""))[:40], str(user.get("team_id") or (payload.get("team") or {}).get("id", ""))[:40]


def _proposal_id(value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return ""


def _refuse(proposal_id: str, *, person: SlackPerson, slack_user: str, team: str, step: str, why: str, outcome: str):
    """Audit a refusal the decision services did not see (they audit their own), on the proposal."""
    who = person.user.get_username() if person.user else f"Slack user {slack_user}"
    decision_refused(
        proposal_id=proposal_id or "unknown",
        user=person.user,
        channel=Channel.SLACK,
        outcome=outcome,
        summary=f"{who} may not {step} this proposal from Slack: {why}.",
        detail={"slack_user": slack_user, "slack_team": team, **({"email": person.email} if person.email else {})},
    )


def _clicked(payload: dict[str, Any]) -> HttpResponse:
    """Approve: decided now. Reject: the modal that asks why (decided when it is submitted)."""
    action = (payload.get("actions") or [{}])[0]
    action_id = action.get("action_id")
    if action_id not in STEP:
        return HttpResponse(status=200)
    step, proposal_id = STEP[action_id], _proposal_id(action.get("value"))
    slack_user, team = _who(payload)
    channel = str((payload.get("channel") or {}).get("id") or (payload.get("container") or {}).get("channel_id", ""))

    def tell(text: str) -> HttpResponse:
        slack_ephemeral(channel=channel, slack_user=slack_user, text=text)
        return HttpResponse(status=200)

    person = slack_person(slack_user, team=team)
    if person.user is None or not proposal_id:
        why, outcome = (person.refusal, person.outcome) if person.user is None else ("no such proposal", "not_found")
        _refuse(proposal_id, person=person, slack_user=slack_user, team=team, step=step, why=why, outcome=outcome)
        return tell(f"Gatehouse refused this: {why}.")
    if step == "reject":
        return _open_reject_modal(payload, proposal_id, person=person, slack_user=slack_user, team=team, tell=tell)
    try:
        proposal_approve(proposal_id=proposal_id, user=person.user, channel=Channel.SLACK)
    except (NotYourDecision, RecordMoved) as exc:  # audited by the service (refused, or decided again: refreshed)
        return tell(str(exc))
    except (InvalidTransition, Proposal.DoesNotExist) as exc:
        why = str(exc).rstrip(".") if isinstance(exc, InvalidTransition) else "no such proposal"
        _refuse(
            proposal_id, person=person, slack_user=slack_user, team=team, step=step, why=why, outcome="not_awaiting"
        )
        return tell(f"Not approved: {why}.")
    return HttpResponse(status=200)


def _open_reject_modal(
    payload: dict[str, Any], proposal_id: str, *, person: SlackPerson, slack_user: str, team: str, tell: Any
) -> HttpResponse:
    proposal = Proposal.objects.select_related("action_type__resource").filter(pk=proposal_id).first()
    if proposal is None or not proposal.awaiting_decision:
        why = f"it is already {proposal.get_status_display().lower()}" if proposal else "no such proposal"
        _refuse(
            proposal_id, person=person, slack_user=slack_user, team=team, step="reject", why=why, outcome="not_awaiting"
        )
        return tell(f"Not rejected: {why}.")
    failed = slack_open_modal(trigger_id=str(payload.get("trigger_id", "")), view=reject_modal(proposal))
    if failed:
        return tell(f"Slack could not open the form ({failed}): reject it on the decision page instead.")
    return HttpResponse(status=200)


def _submitted(payload: dict[str, Any]) -> HttpResponse:
    """The reject modal: the rejection with its reason, or the refusal shown under the reason (Slack keeps the modal
    open when answered with response_action "errors")."""
    view = payload.get("view") or {}
    if view.get("callback_id") != REJECT_MODAL:
        return HttpResponse(status=200)
    proposal_id = _proposal_id(view.get("private_metadata"))
    values = ((view.get("state") or {}).get("values") or {}).get(REASON_BLOCK) or {}
    reason = str((values.get(REASON_BLOCK) or {}).get("value") or "").strip()
    slack_user, team = _who(payload)

    def error(text: str) -> JsonResponse:
        return JsonResponse({"response_action": "errors", "errors": {REASON_BLOCK: text[:150]}})

    person = slack_person(slack_user, team=team)
    if person.user is None or not proposal_id:
        why, outcome = (person.refusal, person.outcome) if person.user is None else ("no such proposal", "not_found")
        _refuse(proposal_id, person=person, slack_user=slack_user, team=team, step="reject", why=why, outcome=outcome)
        return error(f"Gatehouse refused this: {why}.")
    try:
        proposal_reject(proposal_id=proposal_id, user=person.user, channel=Channel.SLACK, reason=reason)
    except NotYourDecision as exc:  # audited by the service
        return error(str(exc))
    except ValueError as exc:  # no reason: nothing was decided, nothing to audit
        return error(str(exc))
    except (InvalidTransition, Proposal.DoesNotExist) as exc:
        why = str(exc).rstrip(".") if isinstance(exc, InvalidTransition) else "no such proposal"
        _refuse(
            proposal_id, person=person, slack_user=slack_user, team=team, step="reject", why=why, outcome="not_awaiting"
        )
        return error(f"Not rejected: {why}.")
    return HttpResponse(status=200)
