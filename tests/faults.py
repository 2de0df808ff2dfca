"""Fault injection with real processes, shared by the tests that stop, kill or restart them: a private stack (its own
sample CRM and broker queue, workers started with the environment a test needs), a private redis-server to stop and
start, and small helpers to read the audit verbs and wait (proposing: tests/factories.py).

The fixtures `private_stack` and `private_redis` (tests/conftest.py) hand these out; the machine's shared PostgreSQL
and Redis are never stopped.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from audit.models import AuditEvent
from tests.live import LiveStack
from tests.stack import ROOT, Process, Stack, free_port

# Short backoff and a small budget, so retries take seconds, not minutes.
FAST_RETRIES = {"GATEHOUSE_EXECUTION_BACKOFF": "0.2", "GATEHOUSE_EXECUTION_MAX_ATTEMPTS": "3"}


class PrivateStack(LiveStack):
    """A LiveStack whose processes belong to one test: start workers (and a web process) with the env you need."""

    def worker(self, name: str = "worker", **env: str) -> Process:
        return self.stack.worker(name, **env)

    def web(self, **env: str) -> str:
        self.stack.web_url = self.stack.web(**env)
        return self.stack.web_url

    def mode(self, **mode: Any) -> dict[str, Any]:
        return self.crm_control("/_control/mode", mode)

    def stats(self) -> dict[str, Any]:
        return self.crm_control("/_stats")

    def log(self, name: str) -> str:
        return (self.stack.dir / f"{name}.log").read_text(errors="replace")

    def sweep(self, **env: str) -> int:
        """Run the outbox sweeper in a process of its own, with the stack's environment (and `env`), as beat would."""
        done = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                "from approvals.execution import outbox_sweep; print('swept', outbox_sweep())",
            ],
            cwd=ROOT,
            env=self.stack.env(**env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return int(done.stdout.split("swept", 1)[1].split()[0])


def kill_all(stack: Stack) -> None:
    """SIGKILL every process of the stack: the test is over, and a warm Celery shutdown (SIGTERM), even of an idle
    worker on the filesystem broker, takes 5-6 s, which would triple this module's runtime."""
    for name in list(stack.processes):
        stack.kill(name)


def verbs(proposal_id) -> list[str]:
    return list(AuditEvent.objects.filter(proposal_id=proposal_id).order_by("id").values_list("verb", flat=True))


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.05)


class PrivateRedis:
    """A redis-server of the test's own, on a fixed port, that the test can stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--daemonize", "no", "--dir", str(self.dir)]
        with (self.dir / "redis.log").open("a") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start:\n{(self.dir / 'redis.log').read_text()}")
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None


def redis_lists(queue: str) -> list[str]:
    """The Redis lists that hold `queue`'s messages: kombu emulates priorities with one list per step (0 is the queue's
    own name), and auto-approved executions go to a lower step than a person's approvals (approvals/services.py)."""
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    return [queue if step == 0 else f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS]


def redis_queue_length(redis_url: str, queue: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(client.llen(name) for name in redis_lists(queue))
    finally:
        client.close()
