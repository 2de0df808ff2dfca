"""`GatehouseClient`: the agent API of CONTRACT.md over httpx, with safe retries and typed results."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from gatehouse_client.errors import ConnectionFailed, GatehouseError, error_from_response
from gatehouse_client.models import Event, Me, Page, Proposal, Record

__version__ = "0.1.0"

# Worth another try with the same request: the server or a proxy in front of it said "not now".
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# …except a kill switch: a person stopped the system or the agent, and seconds of waiting will not change that.
NOT_RETRIED_CODES = frozenset({"system_frozen", "agent_disabled"})


class WaitTimeout(TimeoutError):
    """`wait_for_decision` ran out of time; `proposal` is how Gatehouse last reported it."""

    def __init__(self, proposal: Proposal, timeout: float) -> None:
        super().__init__(f"Proposal {proposal.id} is still {proposal.status} after {timeout:g} s.")
        self.proposal = proposal


class GatehouseClient:
    """An agent's client for Gatehouse's `/api/v1/`.

    Reads and proposals are retried on a lost connection, a timeout, 429 and 502–504, waiting what `Retry-After`
    says (or a growing, jittered backoff), at most `retries` times; a `Retry-After` longer than `max_retry_wait` is
    raised to the caller rather than slept through.
    That is safe: reads change nothing, and every proposal carries an `Idempotency-Key` (a uuid4 unless given) that
    is sent unchanged on each retry, so Gatehouse answers a repeat with the first proposal instead of a second one.
    Refusals raise a `GatehouseError` subclass carrying the problem+json `code`.

        with GatehouseClient("http://127.0.0.1:8000", token) as gatehouse:
            account = gatehouse.read("crm", "accounts", "4471")
            proposal = gatehouse.propose("crm", "update_credit_limit", "4471", {"credit_limit": "2300.00"})
            proposal = gatehouse.wait_for_decision(proposal.id)
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_retry_wait: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        self._http = httpx.Client(
            base_url=self.base_url + "/api/v1/",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": f"gatehouse-client/{__version__}",
            },
            timeout=timeout,
            transport=transport,
        )

    # --- the API ------------------------------------------------------------------------------------------------

    def me(self) -> Me:
        """The calling agent: slug, status and grants."""
        return Me.from_json(self._call("GET", "me").json())

    def read(self, system: str, resource: str, record_id: str) -> Record:
        """One record through the system's connector; fields outside the agent's read grant are left out."""
        path = f"systems/{quote(system, safe='')}/{quote(resource, safe='')}/{quote(str(record_id), safe=':@')}"
        return Record.from_json(self._call("GET", path).json())

    def propose(
        self,
        system: str,
        action: str,
        record_id: str,
        payload: dict[str, Any],
        reason: str = "",
        idempotency_key: str | None = None,
    ) -> Proposal:
        """Propose an action. Gatehouse decides: executed by rule (`approved` then `executed`) or a person's call
        (`pending_approval`). Pass your own `idempotency_key` to make a retry across restarts of your agent safe
        too; a replay answers the first proposal with `replayed` true."""
        key = idempotency_key or str(uuid.uuid4())
        body = {"system": system, "action": action, "record_id": str(record_id), "payload": payload, "reason": reason}
        response = self._call("POST", "proposals", json=body, headers={"Idempotency-Key": key})
        return Proposal.from_json(response.json(), replayed=response.headers.get("Idempotent-Replayed") == "true")

    def proposal(self, proposal_id: str) -> Proposal:
        """One of the agent's own proposals, as it stands now."""
        return Proposal.from_json(self._call("GET", f"proposals/{quote(str(proposal_id), safe='')}").json())

    def proposals(self, status: str | None = None, *, limit: int = 50) -> list[Proposal]:
        """The agent's own proposals, newest first: the latest `limit` (at most 200), of one `status` if given."""
        params: dict[str, str | int] = {"limit": limit}
        if status is not None:
            params["status"] = status
        body = self._call("GET", "proposals", params=params).json()
        return [Proposal.from_json(item) for item in body["results"]]

    def cancel(self, proposal_id: str) -> Proposal:
        """Withdraw a proposal that still awaits a decision (409 `invalid_state` once decided). Not retried."""
        path = f"proposals/{quote(str(proposal_id), safe='')}/cancel"
        return Proposal.from_json(self._call("POST", path, retry=False).json())

    def wait_for_decision(self, proposal_id: str, *, timeout: float = 300.0, poll: float = 1.0) -> Proposal:
        """Poll until the proposal is settled: no longer awaiting a person's decision (`pending_approval`,
        `escalated`) nor being carried out (`approved`, `executing`).

        It then is final (`executed`, `failed`, `rejected`, `cancelled`, `expired`, `reversed`) or with a person
        (`manual_task`, `on_hold`). Raises `WaitTimeout` after `timeout` seconds; a human decision can take hours
        (see `decision.sla_due_at`), so long waits are better done with a larger `poll`.
        """
        deadline = time.monotonic() + timeout
        while True:
            proposal = self.proposal(proposal_id)
            if proposal.settled:
                return proposal
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(proposal, timeout)
            time.sleep(min(poll, left))

    def events(self, system: str | None = None, after: int | None = None, limit: int = 100) -> Page:
        """One page of events (1–500) from the event-queue systems the agent may read, after the cursor `after`."""
        params: dict[str, str | int] = {"limit": limit}
        if system is not None:
            params["system"] = system
        if after is not None:
            params["after"] = after
        return Page.from_json(self._call("GET", "events", params=params).json())

    def iter_events(self, system: str | None = None, after: int | None = None, limit: int = 100) -> Iterator[Event]:
        """Every event after `after`, page by page, until a short page says there are no more for now."""
        while True:
            page = self.events(system, after=after, limit=limit)
            yield from page.events
            if len(page.events) < limit:
                return
            after = page.next_after

    # --- plumbing -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatehouseClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        retry: bool = True,
    ) -> httpx.Response:
        """Send one request (the same one on each retry); a 2xx response or a raised GatehouseError."""
        attempt = 0
        while True:
            error: GatehouseError
            try:
                response = self._http.request(method, path, params=params, json=json, headers=headers)
            except httpx.TransportError as exc:
                url = f"{self.base_url}/api/v1/{path}"
                error = ConnectionFailed("connection_failed", 0, repr(exc), url=url)
                wait = None
                cause: BaseException | None = exc
            else:
                if response.is_success:
                    return response
                error, cause = error_from_response(response), None
                if response.status_code not in RETRY_STATUSES or error.code in NOT_RETRIED_CODES:
                    raise error
                wait = error.retry_after
            if not retry or attempt >= self.retries:
                raise error from cause
            if wait is None:
                wait = min(self.max_retry_wait, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311
            elif wait > self.max_retry_wait:
                raise error from cause  # told to come back later than we are willing to wait: the caller decides
            attempt += 1
            time.sleep(wait)
