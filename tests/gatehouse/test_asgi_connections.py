"""The ASGI web process on PostgreSQL holds a bounded number of database connections, however many requests it serves.

Under ASGI every request runs its sync code in a thread of its own, so persistent connections (one per thread) piled
up until PostgreSQL refused clients: the load run (bench/reliability.py) reached max_connections with 10 agents and
answered 503s. The ASGI entry point now borrows from a pool (governance/asgi.py, GATEHOUSE_DB_POOL_SIZE).
"""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
from django.db import connection

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

POOL_SIZE = 4
CLIENTS = 16
REQUESTS = 160


def _connections_to_this_database() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def _readyz(base_url: str, count: int) -> list[int]:
    """`count` requests to /readyz (it queries the database) over one keep-alive connection."""
    parsed = urlparse(base_url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    statuses = []
    try:
        for _ in range(count):
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        conn.close()
    return statuses


def test_many_concurrent_requests_share_a_bounded_pool_of_connections(tmp_path):
    from tests.stack import Stack

    stack = Stack(tmp_path / "stack")
    try:
        before = _connections_to_this_database()
        web = stack.web(GATEHOUSE_DB_POOL_SIZE=str(POOL_SIZE))
        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = [
                s for batch in pool.map(_readyz, [web] * CLIENTS, [REQUESTS // CLIENTS] * CLIENTS) for s in batch
            ]
        during = _connections_to_this_database() - before
    finally:
        stack.stop_all()
    assert answers.count(200) == REQUESTS, sorted(set(answers))
    # Without the pool this was one connection per request thread: dozens here, and hundreds under a real load.
    assert 1 <= during <= POOL_SIZE
