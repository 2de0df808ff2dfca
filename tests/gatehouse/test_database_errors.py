"""A lost database connection answers 503 with Retry-After (an HTML page for people, problem+json `database_unavailable`
for the API), logged with the request id; a broken query stays a 500. The real thing, a PostgreSQL backend terminated
mid-approval behind the running web process, is tests/approvals/test_faults_database.py.

The views below raise what Django raises when the connection is gone (InterfaceError for a closed connection,
OperationalError wrapping the driver's error); on PostgreSQL one view really terminates its own backend.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3

import psycopg
import psycopg_pool
import pytest
from django.db import InterfaceError, OperationalError, connection
from django.db.backends.postgresql import base as postgresql
from django.db.backends.sqlite3 import base as sqlite3_backend
from django.db.utils import DatabaseErrorWrapper
from django.http import HttpResponse
from django.test import Client
from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from core.database import RETRY_AFTER_SECONDS, is_database_unavailable
from gatehouse.urls import handler500  # noqa: F401 - this module is the URLconf of its tests: keep the 500 handler

pytestmark = pytest.mark.urls("tests.gatehouse.test_database_errors")


def connection_closed(request):
    raise InterfaceError("connection already closed")


def broken_query(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table_here")
    return HttpResponse("unreachable")


def backend_terminated(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        cursor.execute("SELECT 1")
    return HttpResponse("unreachable")


class _OpenView(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []


class ServerGone(_OpenView):
    def get(self, request):
        raise OperationalError("server closed the connection unexpectedly")


class BrokenQuery(_OpenView):
    def get(self, request):
        broken_query(request)
        return Response({})


urlpatterns = [
    path("admin/closed/", connection_closed),
    path("admin/broken/", broken_query),
    path("admin/terminated/", backend_terminated),
    path("api/v1/gone", ServerGone.as_view()),
    path("api/v1/broken", BrokenQuery.as_view()),
]


def test_the_admin_gets_a_clear_503_page_when_the_database_connection_is_lost(client, caplog):
    with caplog.at_level(logging.ERROR, logger="core.database"):
        response = client.post("/admin/closed/", headers={"X-Request-ID": "req-lost-1"})

    assert response.status_code == 503
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "The database connection was lost" in page and "nothing was changed" in page
    assert f"try again in {RETRY_AFTER_SECONDS} seconds" in page
    assert "req-lost-1" in page and response["X-Request-ID"] == "req-lost-1"
    [line] = [record.getMessage() for record in caplog.records if record.name == "core.database"]
    assert "POST /admin/closed/ (request req-lost-1) answered 503: InterfaceError" in line


@pytest.mark.django_db
def test_the_api_answers_problem_json_database_unavailable(client, caplog):
    with caplog.at_level(logging.ERROR, logger="core.database"):
        response = client.get("/api/v1/gone", headers={"X-Request-ID": "req-lost-2"})

    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    body = response.json()
    assert body["code"] == "database_unavailable" and body["status"] == 503
    assert body["type"] == "urn:gatehouse:problem:database_unavailable"
    assert "Idempotency-Key" in body["detail"]
    assert any("(request req-lost-2)" in record.getMessage() for record in caplog.records)


@pytest.mark.django_db
def test_a_broken_query_is_still_a_500_not_an_outage():
    client = Client(raise_request_exception=False)
    page = client.get("/admin/broken/")
    api = client.get("/api/v1/broken")

    assert page.status_code == 500
    assert api.status_code == 500 and api.json()["code"] == "internal_error"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_terminated_postgresql_backend_is_a_503(client):
    try:
        response = client.get("/admin/terminated/")
    finally:
        # The test client keeps Django from closing a broken connection after the request; the server does not.
        connection.close_if_unusable_or_obsolete()

    assert response.status_code == 503
    assert "The database connection was lost" in response.content.decode()


def _wrapped(driver_error: Exception) -> Exception:
    """`driver_error` as Django raises it from a query: its own exception class, the driver's as `__cause__`.

    Django's wrapper picks the class by the backend's driver module, so psycopg's errors go through a PostgreSQL
    backend (never connected) and sqlite3's through an SQLite one, whichever database the suite runs on."""
    backend = postgresql if isinstance(driver_error, psycopg.Error) else sqlite3_backend
    offline = backend.DatabaseWrapper({**connection.settings_dict, "NAME": "never-connected"}, alias="offline")
    try:
        with DatabaseErrorWrapper(offline):
            raise driver_error
    except Exception as exc:  # whichever Django class the wrapper chose is the point
        return exc
    raise AssertionError("the wrapper swallowed the error")


def _sqlite_busy(tmp_path) -> sqlite3.OperationalError:
    """A real SQLITE_BUSY: another connection holds the write lock and this one does not wait."""
    holder = sqlite3.connect(tmp_path / "busy.sqlite3", isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(tmp_path / "busy.sqlite3", timeout=0)
    try:
        other.execute("INSERT INTO t VALUES (1)")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        other.close()
        holder.close()
    raise AssertionError("the second connection was not refused")


def test_only_errors_of_the_connection_or_the_server_count_as_unavailable(tmp_path):
    sqlite_syntax = sqlite3.connect(":memory:")
    try:
        sqlite_syntax.execute("SELECT * FROM nowhere")
    except sqlite3.OperationalError as exc:
        missing_table = exc
    finally:
        sqlite_syntax.close()

    assert is_database_unavailable(_wrapped(psycopg.errors.AdminShutdown("terminating connection")))
    assert is_database_unavailable(_wrapped(psycopg.errors.DeadlockDetected("deadlock detected")))
    assert is_database_unavailable(_wrapped(psycopg.errors.TooManyConnections("too many clients")))
    assert is_database_unavailable(_wrapped(psycopg.OperationalError("server closed the connection unexpectedly")))
    assert is_database_unavailable(_wrapped(psycopg.InterfaceError("the connection is closed")))
    assert is_database_unavailable(_wrapped(psycopg_pool.PoolTimeout("couldn't get a connection after 10.00 sec")))
    assert is_database_unavailable(_wrapped(_sqlite_busy(tmp_path)))

    assert not is_database_unavailable(_wrapped(missing_table))
    assert not is_database_unavailable(_wrapped(psycopg.errors.UndefinedTable("relation does not exist")))
    assert not is_database_unavailable(_wrapped(psycopg.errors.UniqueViolation("duplicate key")))
    assert not is_database_unavailable(ValueError("not a database error"))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_mcp_tool_call_on_a_lost_connection_is_refused_as_database_unavailable(demo, caplog):
    """The MCP door answers what the API answers: a tool error with the contract's code, not an internal error."""
    from agents.mcp.calls import call_tool
    from governance.models import Agent

    agent = Agent.objects.select_related("owner").get(slug="collections-agent")
    with connection.cursor() as cursor, contextlib.suppress(OperationalError):  # the server ends this very session
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    try:
        with caplog.at_level(logging.ERROR, logger="agents.mcp.calls"):
            result = call_tool(agent, "crm_read_account", {"record_id": "4471"})
    finally:
        connection.close()  # the next query (the test's flush) connects afresh
    assert result.is_error and result.structured["code"] == "database_unavailable", result.structured
    assert result.structured["status"] == 503 and result.structured["retry_after"] == RETRY_AFTER_SECONDS
    assert "database unavailable: MCP tool crm_read_account" in caplog.text
