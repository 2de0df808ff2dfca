"""Fixtures for the webhooks tests: a real receiver process on loopback (sandbox/webhook_receiver.py) and a helper to
read what it got."""

from __future__ import annotations

import time

import httpx
import pytest

from webhooks.outbox import forget_subscriptions
from webhooks.signing import new_secret


@pytest.fixture(autouse=True)
def _fresh_subscriptions():
    """Each test reads the subscriptions afresh: another test's (flushed since) must not linger in this process."""
    forget_subscriptions()
    yield
    forget_subscriptions()


class ReceiverSide:
    """The receiver's side door: what it got, and the faults it shows."""

    def __init__(self, url: str, secret: str) -> None:
        self.url, self.secret = url, secret

    def control(self, path: str, body: dict | None = None) -> dict:
        response = httpx.post(f"{self.url}/_control/{path}", json=body or {}, timeout=10)
        response.raise_for_status()
        return response.json()

    def received(self) -> list[dict]:
        return httpx.get(f"{self.url}/_received", timeout=10).json()

    def wait_for(self, predicate, what: str, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.received()
            if predicate(got):
                return got
            assert time.monotonic() < deadline, f"the receiver never got {what}: {got}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def receiver_process(tmp_path_factory):
    """One receiver process for the module (its state is reset for each test)."""
    from tests.stack import Stack

    stack = Stack(tmp_path_factory.mktemp("webhook-receiver"))
    secret = new_secret()
    try:
        url = stack.webhook_receiver("receiver", secret)
        yield ReceiverSide(url, secret)
    finally:
        stack.stop_all()


@pytest.fixture
def receiver(receiver_process):
    receiver_process.control("reset")
    receiver_process.control("secret", {"secret": receiver_process.secret})
    return receiver_process
