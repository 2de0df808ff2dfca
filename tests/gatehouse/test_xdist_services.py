"""The suite's parallel workers keep to their own Redis database."""

import pytest
from django.conf import settings

from tests import xdist_services
from tests.xdist_services import redis_url_for_worker, worker_index


def test_each_worker_counts_down_from_the_urls_own_database():
    assert redis_url_for_worker("redis://127.0.0.1:6379/15", 0) == "redis://127.0.0.1:6379/15"
    assert redis_url_for_worker("redis://127.0.0.1:6379/15", 1) == "redis://127.0.0.1:6379/14"
    assert redis_url_for_worker("redis://127.0.0.1:6379/0", 1) == "redis://127.0.0.1:6379/15"
    assert redis_url_for_worker("rediss://u:p@h:1/3?ssl_cert_reqs=none", 2) == "rediss://u:p@h:1/1?ssl_cert_reqs=none"
    assert redis_url_for_worker("redis://h:6379", 1) == "redis://h:6379/15"
    with pytest.raises(ValueError):
        redis_url_for_worker("memcached://h", 0)


@pytest.mark.redis
def test_the_cache_the_broker_and_the_environment_use_this_workers_database():
    import os

    from django.core.cache import cache

    from gatehouse.celery import app

    index = worker_index()
    if index is None:
        pytest.skip("not under pytest-xdist")
    url = settings.REDIS_URL
    assert url == redis_url_for_worker(xdist_services.given_url, index)
    assert os.environ["REDIS_URL"] == url
    assert app.conf.broker_url == url
    assert cache._cache._servers == [url]  # Django's RedisCache keeps its LOCATION list
