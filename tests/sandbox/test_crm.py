"""The sample CRM behaves like a small, real system of record: auth, writes, idempotency, conflicts and faults."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from sandbox.testing import CRMControlError, crm_control, run_crm

TOKEN = "test-token-7f3a"


@pytest.fixture(scope="module")
def crm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_crm(token=TOKEN, store=tmp_path_factory.mktemp("crm") / "crm.sqlite3") as url:
        yield url


@pytest.fixture(autouse=True)
def fresh_crm(crm_url: str) -> None:
    crm_control(crm_url, "/_control/reset")


def call(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    key: str | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if key is not None:
        headers["Idempotency-Key"] = key
    payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response
    finally:
        conn.close()


def test_reading_an_account_requires_the_bearer_token(crm_url: str) -> None:
    for token in (None, "wrong-token", ""):
        status, body, _ = call(crm_url, "GET", "/accounts/4471", token=token)
        assert (status, body) == (401, {"error": "unauthorized"})


def test_reading_a_seeded_account_returns_the_full_record(crm_url: str) -> None:
    status, record, response = call(crm_url, "GET", "/accounts/4471")
    assert status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert record["id"] == "4471"
    assert record["name"] == "Northwind Traders"
    assert record["email"] == "ap@northwind.example"
    assert record["status"] == "active"
    assert record["credit_limit"] == "2000.00"
    assert record["version"] == 1
    assert isinstance(record["notes"], list)
    assert record["updated_at"]


def test_an_unknown_account_is_not_found(crm_url: str) -> None:
    status, body, _ = call(crm_url, "GET", "/accounts/9999")
    assert status == 404
    assert "error" in body


def test_patching_the_credit_limit_returns_before_and_after_and_bumps_the_version(crm_url: str) -> None:
    status, body, _ = call(crm_url, "PATCH", "/accounts/4471", {"credit_limit": "2500"})
    assert status == 200
    assert body["before"] == {"credit_limit": "2000.00"}
    assert body["after"] == {"credit_limit": "2500.00"}
    assert body["record"]["credit_limit"] == "2500.00"
    assert body["record"]["version"] == 2
    assert call(crm_url, "GET", "/accounts/4471")[1]["credit_limit"] == "2500.00"


def test_repeating_a_write_with_the_same_idempotency_key_applies_it_once(crm_url: str) -> None:
    first = call(crm_url, "POST", "/accounts/4472/notes", {"text": "Called about invoice 118"}, key="k-1")
    again = call(crm_url, "POST", "/accounts/4472/notes", {"text": "Called about invoice 118"}, key="k-1")
    assert first[0] == again[0] == 201
    assert first[1] == again[1]
    assert first[2].getheader("Idempotent-Replayed") is None
    assert again[2].getheader("Idempotent-Replayed") == "true"
    assert len(call(crm_url, "GET", "/accounts/4472")[1]["notes"]) == 1
    stats = crm_control(crm_url, "/_stats")
    assert stats["writes_by_key"] == {"k-1": 1}
    assert stats["writes_total"] == 1


def test_an_idempotency_key_cannot_be_reused_for_a_different_write(crm_url: str) -> None:
    call(crm_url, "PATCH", "/accounts/4471", {"status": "on_hold"}, key="k-2")
    status, body, _ = call(crm_url, "PATCH", "/accounts/4473", {"status": "on_hold"}, key="k-2")
    assert status == 422
    assert body["field"] == "Idempotency-Key"
    assert call(crm_url, "GET", "/accounts/4473")[1]["status"] == "active"


def test_notes_can_be_added_and_then_deleted_once(crm_url: str) -> None:
    status, body, _ = call(crm_url, "POST", "/accounts/4473/notes", {"text": "Asked for net-60 terms"})
    assert status == 201
    note = body["note"]
    assert note["text"] == "Asked for net-60 terms"
    assert note in body["record"]["notes"]
    status, body, _ = call(crm_url, "DELETE", f"/accounts/4473/notes/{note['id']}")
    assert status == 200
    assert body["deleted"] == note
    assert note not in body["record"]["notes"]
    assert call(crm_url, "DELETE", f"/accounts/4473/notes/{note['id']}")[0] == 404


@pytest.mark.parametrize("text", ["", "   ", "x" * 2001, 42])
def test_a_note_needs_non_empty_text_of_reasonable_length(crm_url: str, text: Any) -> None:
    status, body, _ = call(crm_url, "POST", "/accounts/4473/notes", {"text": text})
    assert (status, body["field"]) == (422, "text")


def test_sending_a_statement_records_the_recipient_and_time(crm_url: str) -> None:
    status, body, _ = call(crm_url, "POST", "/accounts/4471/statements", {"period": "2025-10"})
    assert status == 201
    statement = body["statement"]
    assert statement["sent_to"] == "ap@northwind.example"
    assert statement["sent_at"]
    assert statement["id"]
    assert call(crm_url, "POST", "/accounts/4471/statements", {})[0] == 201


def test_a_stale_expected_version_is_refused_with_the_current_record(crm_url: str) -> None:
    edited = crm_control(crm_url, "/_control/set", {"account": "4471", "fields": {"name": "Northwind Traders Ltd"}})
    assert edited["version"] == 2
    status, body, _ = call(crm_url, "PATCH", "/accounts/4471", {"credit_limit": "3000.00", "expected_version": 1})
    assert status == 409
    assert body["error"] == "version_conflict"
    assert body["current"]["name"] == "Northwind Traders Ltd"
    assert body["current"]["credit_limit"] == "2000.00"
    status, body, _ = call(crm_url, "PATCH", "/accounts/4471", {"credit_limit": "3000.00", "expected_version": 2})
    assert (status, body["record"]["version"]) == (200, 3)


def test_throttle_mode_answers_429_with_retry_after_then_returns_to_normal(crm_url: str) -> None:
    crm_control(crm_url, "/_control/mode", {"mode": "throttle", "retry_after": 2, "count": 2})
    for _ in range(2):
        status, _body, response = call(crm_url, "GET", "/accounts/4471")
        assert status == 429
        assert response.getheader("Retry-After") == "2"
    assert call(crm_url, "GET", "/accounts/4471")[0] == 200
    assert crm_control(crm_url, "/_stats")["requests_total"] == 3


def test_error_mode_answers_503_until_set_back_to_normal(crm_url: str) -> None:
    crm_control(crm_url, "/_control/mode", {"mode": "error", "status": 503})
    assert call(crm_url, "PATCH", "/accounts/4471", {"status": "closed"})[0] == 503
    assert call(crm_url, "GET", "/accounts/4471")[0] == 503
    assert crm_control(crm_url, "/_health") == {"ok": True}
    crm_control(crm_url, "/_control/mode", {"mode": "normal"})
    status, record, _ = call(crm_url, "GET", "/accounts/4471")
    assert (status, record["status"]) == (200, "active")


def test_echo_mode_answers_its_status_with_the_headers_it_received_even_without_retry_after(crm_url: str) -> None:
    crm_control(crm_url, "/_control/mode", {"mode": "echo", "status": 429, "count": 1})
    status, body, response = call(crm_url, "GET", "/accounts/4471")
    assert (status, body["error"], response.getheader("Retry-After")) == (429, "debug_echo", None)
    assert body["debug"]["received_headers"]["authorization"] == f"Bearer {TOKEN}"
    assert call(crm_url, "GET", "/accounts/4471")[0] == 200
    with pytest.raises(CRMControlError, match="between 400 and 599"):
        crm_control(crm_url, "/_control/mode", {"mode": "echo", "status": 302})


def test_slow_mode_delays_the_answer(crm_url: str) -> None:
    crm_control(crm_url, "/_control/mode", {"mode": "slow", "delay": 0.3, "count": 1})
    started = time.monotonic()
    assert call(crm_url, "GET", "/accounts/4471")[0] == 200
    assert time.monotonic() - started >= 0.3


def test_reset_restores_the_seed_data_and_clears_stats(crm_url: str) -> None:
    call(crm_url, "PATCH", "/accounts/4471", {"credit_limit": "50.00"}, key="k-3")
    crm_control(crm_url, "/_control/reset")
    record = call(crm_url, "GET", "/accounts/4471")[1]
    assert (record["credit_limit"], record["version"]) == ("2000.00", 1)
    stats = crm_control(crm_url, "/_stats")
    assert (stats["writes_total"], stats["writes_by_key"], stats["requests_total"]) == (0, {}, 1)
    _, body, response = call(crm_url, "PATCH", "/accounts/4471", {"credit_limit": "50.00"}, key="k-3")
    assert response.getheader("Idempotent-Replayed") is None
    assert body["before"] == {"credit_limit": "2000.00"}


def test_generated_accounts_are_added_once_and_go_with_a_reset(crm_url: str) -> None:
    assert crm_control(crm_url, "/_control/accounts", {"count": 3}) == {
        "accounts": ["5001", "5002", "5003"],
        "created": 3,
    }
    call(crm_url, "PATCH", "/accounts/5002", {"credit_limit": "1500.00"}, key="k-gen")
    again = crm_control(crm_url, "/_control/accounts", {"count": 4})
    assert (again["accounts"][-1], again["created"]) == ("5004", 1)
    status, record, _ = call(crm_url, "GET", "/accounts/5002")
    assert (status, record["credit_limit"], record["version"], record["notes"]) == (200, "1500.00", 2, [])
    crm_control(crm_url, "/_control/reset")
    assert call(crm_url, "GET", "/accounts/5001")[0] == 404


@pytest.mark.parametrize("count", [0, 10_001, "5", None, True])
def test_generated_accounts_need_a_sensible_count(crm_url: str, count: Any) -> None:
    with pytest.raises(CRMControlError) as refused:
        crm_control(crm_url, "/_control/accounts", {"count": count})
    assert refused.value.status == 422
    assert call(crm_url, "GET", "/accounts/5001")[0] == 404


def test_invalid_json_is_refused_with_400(crm_url: str) -> None:
    status, body, _ = call(crm_url, "PATCH", "/accounts/4471", raw=b"{not json")
    assert status == 400
    assert "error" in body


@pytest.mark.parametrize("value", ["-5.00", "12.345", "abc", "", 2500, "1e3", None])
def test_a_malformed_credit_limit_is_refused_with_422(crm_url: str, value: Any) -> None:
    status, body, _ = call(crm_url, "PATCH", "/accounts/4471", {"credit_limit": value})
    assert (status, body["field"]) == (422, "credit_limit")
    assert call(crm_url, "GET", "/accounts/4471")[1]["version"] == 1


def test_an_unknown_status_is_refused_with_422(crm_url: str) -> None:
    status, body, _ = call(crm_url, "PATCH", "/accounts/4471", {"status": "deleted"})
    assert (status, body["field"]) == (422, "status")
