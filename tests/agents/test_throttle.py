"""The per-agent rate (GCRA): a burst of the whole rate, then one request per interval, and an exact Retry-After."""

import uuid

import pytest

from agents import throttle as throttling


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def store(request, settings):
    if request.param == "local":
        settings.REDIS_URL = ""
    return request.param


def test_a_burst_of_the_whole_rate_passes_then_the_next_waits_one_interval(store):
    key = f"throttle:test:{uuid.uuid4()}"
    assert [throttling.take(key, "3/min") for _ in range(3)] == [0, 0, 0]
    wait = throttling.take(key, "3/min")
    assert 19 < wait <= 20  # one interval: 60 s / 3


def test_a_refused_request_does_not_use_up_the_rate(store):
    key = f"throttle:test:{uuid.uuid4()}"
    for _ in range(2):
        throttling.take(key, "2/s")
    first = throttling.take(key, "2/s")
    second = throttling.take(key, "2/s")
    assert 0 < second <= first + 0.01  # refusals are not counted: the wait does not grow


def test_rates_parse_with_any_unit_spelling():
    assert throttling.parse_rate("1200/min") == (1200, 60.0)
    assert throttling.parse_rate("10/second") == (10, 1.0)
    assert throttling.parse_rate("5/hour") == (5, 3600.0)
