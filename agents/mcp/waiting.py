"""wait_for_decision: wait, without holding a thread, for a person to decide one of the agent's proposals.

The call's first answer (agents.mcp.calls) found the proposal undecided; from there each poll is a short piece of
database work in a worker thread, checked as a new call would be (token, kill switch, the agent's own proposal), with
the event loop free in between. While it waits, a client that sent a progressToken hears who decides and by when.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import anyio
from django.utils import timezone
from mcp.server.context import ServerRequestContext

from agents.mcp import calls, notices
from agents.mcp.results import ToolResult, Wait
from agents.mcp.work import in_thread, with_request_id

# A person's decision shows within this long; each poll is one token lookup and one proposal query.
POLL_SECONDS = 1.0
# Progress is reported when what it says changes, and at least this often (also a keep-alive for proxies).
PROGRESS_EVERY_SECONDS = 5.0


async def wait_for_decision(
    ctx: ServerRequestContext[Any, Any], result: ToolResult, *, token: str, source: str | None, request_id: str
) -> ToolResult:
    """Poll until the proposal is decided (and executed or failed), the token or a kill switch ends the wait (a
    refusal with its code), or the wait's time is up (the proposal as it stands, said to be still waiting)."""
    wait = result.wait
    assert wait is not None
    recheck = with_request_id(request_id, functools.partial(calls.proposal_recheck, token, source, wait.proposal_id))
    started = anyio.current_time()
    told, told_at = "", -PROGRESS_EVERY_SECONDS
    while True:
        elapsed = anyio.current_time() - started
        said = waiting_words(result)
        if said != told or elapsed - told_at >= PROGRESS_EVERY_SECONDS:
            await notices.progress(ctx, round(elapsed, 1), wait.seconds, said)
            told, told_at = said, elapsed
        if elapsed >= wait.seconds:
            return _timed_out(result, wait)
        await anyio.sleep(min(POLL_SECONDS, wait.seconds - elapsed))
        if await _gone(ctx):  # nobody is listening any more: stop polling for them
            return result
        result = await in_thread(recheck)
        if not result.undecided:  # decided, executed, failed, or refused (revoked token, kill switch)
            return result


async def _gone(ctx: ServerRequestContext[Any, Any]) -> bool:
    is_disconnected = getattr(ctx.request, "is_disconnected", None)  # the HTTP request (Starlette's) of this call
    try:
        return bool(is_disconnected is not None and await is_disconnected())
    except Exception:
        return False


def waiting_words(result: ToolResult) -> str:
    """What the proposal waits for, in a few words: "waiting for approver (due 15:30 UTC)"."""
    body = result.structured
    if body.get("outcome") == "approved":
        return "approved; waiting for the execution"
    waiting_for = body.get("waiting_for") or {}
    proposal = body.get("proposal") or {}
    who = waiting_for.get("approver") or (
        f"someone in {waiting_for['approver_group']}" if waiting_for.get("approver_group") else "a person"
    )
    if proposal.get("decided_at"):  # dual, reviewed before execution: the approver has said yes
        who = f"the second review by {waiting_for.get('second_review_group') or 'a reviewer'}"
    due = waiting_for.get("due_at")
    return f"waiting for {who}" + (f" (due {_when(due)})" if due else "")


def _when(iso: str) -> str:
    try:
        moment = datetime.fromisoformat(iso).astimezone(UTC)
    except ValueError:
        return iso
    today = timezone.now().astimezone(UTC).date()
    return moment.strftime("%H:%M UTC" if moment.date() == today else "%Y-%m-%d %H:%M UTC")


def _timed_out(result: ToolResult, wait: Wait) -> ToolResult:
    message = f"Still undecided after waiting {wait.seconds:g} s. {result.message}"
    result.message = message
    result.structured["message"] = message
    return result
