"""A small closed-loop load generator: N client threads, each with one keep-alive connection, for a fixed time."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")


Request = tuple[str, str, bytes | None, dict[str, str]]  # method, path, body, headers


def load(
    base_url: str,
    make_request: Callable[[int, int], Request],
    *,
    clients: int = 1,
    seconds: float | None = None,
    count: int | None = None,
    expect: tuple[int, ...] = (200, 201),
) -> Run:
    """Each client sends requests back to back until the time or the per-client count runs out."""
    parsed = urlparse(base_url)
    run = Run()
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds if seconds else None
    per_client = (count // clients) if count else None

    def client(number: int) -> None:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        latencies: list[float] = []
        errors: dict[int, int] = {}
        sent = 0
        while True:
            if stop_at and time.perf_counter() >= stop_at:
                break
            if per_client is not None and sent >= per_client:
                break
            method, path, body, headers = make_request(number, sent)
            started = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
                status = 0
            elapsed = time.perf_counter() - started
            sent += 1
            if status in expect:
                latencies.append(elapsed)
            else:
                errors[status] = errors.get(status, 0) + 1
        conn.close()
        with lock:
            run.latencies.extend(latencies)
            for status, n in errors.items():
                run.errors[status] = run.errors.get(status, 0) + n

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.seconds = time.perf_counter() - started
    return run


def get(path: str, headers: dict[str, str] | None = None) -> Callable[[int, int], Request]:
    return lambda client, n: ("GET", path, None, headers or {})


def post_json(path: str, body: Callable[[int, int], dict], headers: dict[str, str]) -> Callable[[int, int], Request]:
    return lambda client, n: (
        "POST",
        path,
        json.dumps(body(client, n)).encode(),
        {"Content-Type": "application/json", **headers},
    )
